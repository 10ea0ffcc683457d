"""The configuration file: YAML, `${ENV}` interpolation for secrets, strict keys.

Each part's schema is its own: a backend entry is validated by its kind's (declared
with the kind in backends/, listed in backends/registry.py), the rest here.

Where it comes from, what a mistake says, and what a file leaves out: loading.py.

The modules, by responsibility (callers import every name from here):

- server.py, routing.py, access.py, observability.py, rooms.py: each section's schema
- schema.py: `Config`, the whole file, and `Loaded`; workers, local URL, data dir
- checks.py: what a config must be beyond its types
- loading.py: finding, reading, interpolating and validating the file
"""

from aistack.config.access import (
    AuthConfig,
    ConsoleConfig,
    LedgerConfig,
    LimitsConfig,
    PriceConfig,
)
from aistack.config.checks import placeholder
from aistack.config.loading import EMBEDDED_DEFAULT, find_config, load, parse, parse_noting
from aistack.config.observability import (
    LangfuseConfig,
    LoggingConfig,
    MetricsConfig,
    TracingConfig,
)
from aistack.config.rooms import (
    AgentsConfig,
    ImagesConfig,
    VectorBackupConfig,
    VectorQuota,
    VectorsConfig,
)
from aistack.config.routing import (
    CooldownConfig,
    DeploymentConfig,
    HealthConfig,
    ModelDefaults,
    ModelRoutingConfig,
    RoutingConfig,
    Strategy,
)
from aistack.config.schema import Config, Loaded, data_dir_of, local_url, worker_count
from aistack.config.server import ServerConfig, WorkerRole
from aistack.core.errors import ConfigError as ConfigError  # where callers find it

__all__ = [
    "EMBEDDED_DEFAULT",
    "AgentsConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "CooldownConfig",
    "DeploymentConfig",
    "HealthConfig",
    "ImagesConfig",
    "LangfuseConfig",
    "LedgerConfig",
    "LimitsConfig",
    "Loaded",
    "LoggingConfig",
    "MetricsConfig",
    "ModelDefaults",
    "ModelRoutingConfig",
    "PriceConfig",
    "RoutingConfig",
    "ServerConfig",
    "Strategy",
    "TracingConfig",
    "VectorBackupConfig",
    "VectorQuota",
    "VectorsConfig",
    "WorkerRole",
    "data_dir_of",
    "find_config",
    "load",
    "local_url",
    "parse",
    "parse_noting",
    "placeholder",
    "worker_count",
]
