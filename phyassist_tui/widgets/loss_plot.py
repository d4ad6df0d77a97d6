"""Live training loss, drawn with textual-plotext."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    DEFAULT_CSS = "LossPlot { height: 1fr; min-height: 6; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps: list[int] = []
        self.losses: list[float] = []

    def on_mount(self) -> None:
        self._draw()

    def add_point(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("training loss")
        plt.xlabel("step")
        if self.steps:
            plt.plot(self.steps, self.losses, marker="braille")
        self.refresh()
