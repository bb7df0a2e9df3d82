// attnviz clickable image (attnviz/app/click_image.py): the picture at the frame's width;
// a click is sent as {x, y, width, height, unix_time}, the point in displayed pixels and
// the displayed size, as the package's ui.to_image_xy reads it.
// The Streamlit component protocol (v1) without its npm library. Deferred: the <img>
// exists before the first render message can arrive.
const img = document.getElementById("image");

function send(type, data) {
  window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
}

function fitHeight() {
  send("streamlit:setFrameHeight", { height: Math.ceil(img.getBoundingClientRect().height) });
}

img.addEventListener("load", fitHeight);
window.addEventListener("resize", fitHeight);
img.addEventListener("click", (e) => {
  const value = { x: e.offsetX, y: e.offsetY, width: img.width, height: img.height, unix_time: Date.now() };
  send("streamlit:setComponentValue", { value: value, dataType: "json" });
});

window.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "streamlit:render") return;
  const src = event.data.args.src;
  if (src && img.getAttribute("src") !== src) img.src = src;  // the same picture again: no reload
});

send("streamlit:componentReady", { apiVersion: 1 });
