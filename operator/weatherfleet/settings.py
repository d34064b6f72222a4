"""One settings mechanism for the three services: the operator (`controller.settings.OperatorSettings`,
`WEATHERFLEET_*`), OtaFlux (`otaflux.config.Settings`, the original OtaFlux's variable names) and ingest
(`commands.ingest.IngestSettings`). Each is a pydantic-settings model whose fields name their environment
variables; a service reads its settings once, when it starts (`from_env()`), never at import, and command
line flags are passed in as overrides (a flag wins over the environment)."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import Field
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

# The environment `from_env` reads: the process's, or a mapping a caller passes (tests, checks of a
# Deployment's environment).
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("environ", default=None)


class _Environment(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        return parse_env_vars(
            os.environ if environ is None else environ,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )


def setting(variable: str, help_text: str, default: Any = None, **constraints: Any) -> Any:
    """A field read from environment variable `variable`, with the help text its flag shows."""
    return Field(default=default, validation_alias=variable, description=help_text, **constraints)


class ServiceSettings(BaseSettings):
    """Environment variables and explicit values (flags) only: no .env files, no secrets directories."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True, populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The settings from `environ` (default: the process environment); `overrides` (flags given on
        the command line; None means not given) win over it."""
        token = _ENVIRON.set(environ)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        finally:
            _ENVIRON.reset(token)
