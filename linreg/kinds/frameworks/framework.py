"""What a framework is to the audit: a record, from which its kind is made.

A `Framework` names the package to import (the first of its modules found), the extra that
installs it, the kind's signature, summary, options and doc, and `fit`: given the imported
package, the user's factory and the options, how the framework's own Trainer trains one of the
factory's models (a `Fit`). The kind runs that Trainer as a training loop and judges it as one
(`linreg.kinds.training_loop`); its options take at least `example`, `drop_last` and `timeout`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from linreg.kinds import training_loop
from linreg.kinds.base import Kind, Target, TargetError
from linreg.kinds.options import Options
from linreg.kinds.training_loop import Watch


@dataclass(frozen=True)
class Fit:
    """How the framework trains: the loop the audit calls, and what it watches in it."""

    loop: Callable[..., None]  # asks by name, as a training loop does: model, loader, ...
    accumulation_steps: int = 1  # batches per optimizer step, as the framework is told (1:
    # none, and a module that steps itself accumulates as its run shows)
    watch: Watch | None = None  # where each step's rows are read (None: the model's forward)


@dataclass(frozen=True)
class Framework:
    """A framework whose own Trainer the audit runs as a training loop."""

    name: str  # the kind's name: "lightning"
    modules: tuple[str, ...]  # what to import, the first found: ("lightning.pytorch", ...)
    extra: str  # the extra that installs it: pip install 'linreg-pitfalls[EXTRA]'
    signature: str
    summary: str
    options: type[Options]
    fit: Callable[[ModuleType, Callable[..., Any], Any], Fit]  # raises TargetError if it can't
    doc: str

    @property
    def install(self) -> str:
        """Return the command that installs the framework with linreg."""
        return f"pip install 'linreg-pitfalls[{self.extra}]'"

    @property
    def needs(self) -> str:
        """Return what must be installed, as the user says it: "lightning or pytorch-lightning"."""
        return " or ".join(m.split(".")[0].replace("_", "-") for m in self.modules)

    def package(self) -> ModuleType:
        """Return the framework's package; raise TargetError naming the extra to install."""
        for name in self.modules:
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        raise TargetError(f"the {self.name} audit needs {self.needs}: {self.install}")

    def build(self, fn: Callable[..., Any], options: Any) -> Target:
        """Return the training-loop target that runs the factory's models under the Trainer."""
        fit = self.fit(self.package(), fn, options)
        return training_loop.framework_target(
            fit.loop,
            self.name.replace("-", "_"),
            fn,
            fit.watch,
            example=options.example,
            accumulation_steps=fit.accumulation_steps if fit.accumulation_steps > 1 else None,
            drop_last=options.drop_last,
            timeout=options.timeout,
        )

    def kind(self) -> Kind:
        """Return the kind the audit, the command line and the plugin know the framework as."""
        return Kind(
            name=self.name,
            signature=self.signature,
            summary=self.summary,
            options=self.options,
            build=self.build,
            judged_as="training-loop",
            doc=f"{self.doc} Needs {self.needs}: {self.install}.",
        )
