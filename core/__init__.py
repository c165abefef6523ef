"""DDPM Studio's diffusion engine: plain PyTorch, no Qt.

Modules are named for what they hold: ``config`` (the YAML schema), ``schedule`` (noise tables,
forward and reverse step), ``unet`` (the model), ``data`` (folders and IDX files to tensors),
``trainer`` (the training loop and its events), ``samplers`` (DDPM, DDIM, DPM-Solver++),
``checkpoint`` (safetensors weights and resume state), ``exports`` (grids, animations), ``cli``.
"""
__version__ = "0.1.0"
