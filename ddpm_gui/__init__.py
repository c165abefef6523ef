"""DDPM Studio's desktop window: a Qt view over the engine in ``core``.

Nothing here computes diffusion math, and nothing here imports torch at module level: the
window must appear before the engine loads. Modules are named for what they hold: ``app``
(the QApplication and the window factory), ``main_window``, one module per panel
(``dataset_panel``, ``config_editor`` with its per-field editors in ``fields``,
``training_panel``, ``sampling_panel``), the widgets they use (``loss_plot``, ``frame_player``,
``images``, ``banner``), ``workers`` (threads with
a small signal set), ``training`` (the training controller), ``engine`` (lazy engine calls) and
``settings`` (where runs live and what is remembered between launches).
"""
