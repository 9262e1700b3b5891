"""Configuration: the one settings model, in slices (``config.settings``)."""

from qexplorer.config.settings import (
    PROJECT_ROOT,
    ExplorationSettings,
    ExtractorSettings,
    IndexSettings,
    KafkaSettings,
    MetricsSettings,
    OpenSearchSettings,
    PathsSettings,
    ReviewSettings,
    SecurityProtocol,
    ServingSettings,
    Settings,
    SettingsError,
    StandingSettings,
    TopicSettings,
    WorkerSettings,
)

__all__ = ["PROJECT_ROOT", "ExplorationSettings", "ExtractorSettings", "IndexSettings",
           "KafkaSettings", "MetricsSettings", "OpenSearchSettings", "PathsSettings",
           "ReviewSettings", "SecurityProtocol", "ServingSettings", "Settings", "SettingsError",
           "StandingSettings", "TopicSettings", "WorkerSettings"]
