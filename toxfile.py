"""tox inline plugin: let every torch environment share one virtualenv, so torch installs once.

tox 4 records the name of the environment that created a virtualenv and recreates it when an
environment of another name uses the same env_dir (tox-dev/tox#2788). The `shared-virtualenv`
runner leaves the name out of that comparison; everything else (python, deps, extras) is still
compared, so a change of requirements still recreates the environment. Do not run the shared
environments in parallel (`tox -p`): they use the same folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tox.plugin import impl
from tox.tox_env.info import Info
from tox.tox_env.python.virtual_env.runner import VirtualEnvRunner
from tox.tox_env.register import ToxEnvRegister


class _SharedInfo(Info):
    @contextmanager
    def compare(
        self, value: Any, section: str, sub_section: str | None = None
    ) -> Iterator[tuple[bool, Any | None]]:
        if section == "ToxEnv" and isinstance(value, dict) and "name" in value:
            value = {**value, "name": "shared"}
        with super().compare(value, section, sub_section) as result:
            yield result


class SharedVirtualEnvRunner(VirtualEnvRunner):
    """A virtualenv runner whose env_dir may be shared by environments of different names."""

    @staticmethod
    def id() -> str:
        return "shared-virtualenv"

    @property
    def cache(self) -> Info:
        return _SharedInfo(self.env_dir)


@impl
def tox_register_tox_env(register: ToxEnvRegister) -> None:
    register.add_run_env(SharedVirtualEnvRunner)
