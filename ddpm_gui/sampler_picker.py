"""A sampler list and a step count that follows it, as the Sample and Evaluate pages show them."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QSpinBox

from core.choices import DEFAULT_SAMPLER, SAMPLER_TABLE, SAMPLERS, app_steps


class SamplerPicker:
    """The sampler table as a combo box, and a steps box that takes each sampler's own default.

    Choosing a sampler sets its default step count (the app's default sampler takes the app's
    step count, not the table's full chain), capped at the schedule's length, which
    :meth:`set_num_timesteps` follows from the model's config.
    """

    def __init__(self, combo_name: str, steps_name: str) -> None:
        self.num_timesteps = 1000
        self.combo = QComboBox()
        self.combo.setObjectName(combo_name)
        for spec in SAMPLER_TABLE:
            self.combo.addItem(spec.title, spec.name)
        self.steps = QSpinBox()
        self.steps.setObjectName(steps_name)
        self.steps.setRange(1, self.num_timesteps)
        self.steps.setAccelerated(True)
        self.combo.currentIndexChanged.connect(self.use_default_steps)
        self.combo.setCurrentIndex(SAMPLERS.index(DEFAULT_SAMPLER))
        self.use_default_steps()

    def set_num_timesteps(self, num_timesteps: int) -> None:
        self.num_timesteps = num_timesteps
        self.steps.setMaximum(num_timesteps)
        self.use_default_steps()

    def use_default_steps(self) -> None:
        self.steps.setValue(app_steps(self.combo.currentData(), self.num_timesteps))
