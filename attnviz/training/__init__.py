"""Training attnviz's models (kept out of the library, as torchvision keeps its
``references/``): the recipe (``recipe``), the loop with ``train_one_epoch``
(``loop``), data preparation (``data``), ``predict`` and ``evaluate``, the SE profile
computation (``profile``), and two speed-ups used only while training (``allocator``,
``compiled``). Neither the core nor the app imports this package."""
