"""The steps of a field command on a rich progress display: ✓ done, ✗ failed or interrupted."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console, RenderableType
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from hil.cli.text import encodes_everything, plain


class Steps:
    """Steps on a rich progress display: each call starts a step and completes the previous one."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._current: list[tuple[TaskID, str]] = []

    def __call__(self, name: str) -> None:
        self.finish()
        self._current.append((self._progress.add_task(name, total=1), name))

    def count(self, done: int, total: int) -> None:
        """Show how far the current step is (files copied of those that differ)."""
        if self._current:
            task, name = self._current[-1]
            self._progress.update(task, description=f"{name}: {done}/{total} copied")

    def finish(self) -> None:
        """Mark the current step complete."""
        if self._current:
            self._progress.update(self._current[-1][0], completed=1)

    def fail(self) -> None:
        """Mark the current step failed (or interrupted), unless it is complete."""
        if self._current:
            task = self._current[-1][0]
            if not any(t.id == task and t.finished for t in self._progress.tasks):
                self._progress.update(task, failed=True)


class _StepMark(ProgressColumn):
    """✓ for a done step, ✗ for the step that failed or was interrupted, a spinner while one runs (on a
    terminal only: a log or a pipe gets no spinner frames)."""

    def __init__(self, out: Console) -> None:
        super().__init__()
        # rich's default spinner is braille, which an ASCII or Latin-1 terminal shows escaped: - \ | / there
        spinner = "dots" if encodes_everything(out.encoding) else "line"
        self._spinner = SpinnerColumn(spinner) if out.is_terminal else None
        self._failed, self._done = plain("✗", out), plain("✓", out)  # 'x' and 'ok' where out cannot show them

    def render(self, task: Task) -> RenderableType:
        if task.fields.get("failed"):
            return Text(self._failed, style="bold red")
        if task.finished:
            return Text(self._done, style="green")
        return self._spinner.render(task) if self._spinner is not None else Text("-")


@contextmanager
def steps(out: Console) -> Iterator[Steps]:
    """A rich progress display of :class:`Steps`; the step running when it ends by an exception is marked ✗."""
    with Progress(_StepMark(out), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=out, transient=False) as progress:
        shown = Steps(progress)
        try:
            yield shown
        except BaseException:
            shown.fail()
            raise
        shown.finish()
