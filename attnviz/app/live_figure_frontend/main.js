// One Plotly figure that stays mounted across Streamlit reruns: each render message
// carries the whole figure, and Plotly.react redraws only what changed (st.plotly_chart
// remounts a chart whose figure changed, which costs a full Plotly.newPlot per click).
// The Streamlit component protocol (v1) without its npm library: messages to the
// parent announce readiness and the frame height; render messages carry the args.
const gd = document.getElementById("figure");

function send(type, data) {
  window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
}

let pending = null;
let drawing = false;

async function draw() {
  // Only the latest figure matters: renders that arrive while one is drawn are folded.
  drawing = true;
  try {
    while (pending !== null) {
      const args = pending;
      pending = null;
      const fig = JSON.parse(args.figure);
      await Plotly.react(gd, fig.data, fig.layout, args.config || {});
      send("streamlit:setFrameHeight", { height: Math.ceil(gd.getBoundingClientRect().height) });
    }
  } finally {
    drawing = false;  // a figure that failed to draw must not block the next one
  }
}

window.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "streamlit:render") return;
  pending = event.data.args;
  if (!drawing) draw();
});

window.addEventListener("resize", () => { if (gd.data) Plotly.Plots.resize(gd); });

send("streamlit:componentReady", { apiVersion: 1 });
