"""Which Spark settings the running Spark version knows: a profile must not set one it lacks.

Spark silently ignores a key it does not define, so a setting renamed or added in another
Spark version (the cluster's, say) would simply not apply. Spark registers every setting it
defines as a ConfigEntry when the object holding it is initialised; `unknown_keys` initialises
those holders in the driver's JVM and asks the registry. tests/test_spark_keys.py checks every
profile in conf/ against the pinned Spark; the job logs a warning at start-up.
"""

from __future__ import annotations

import re

# Objects whose initialisation registers Spark's settings (core, SQL, Python, UI, YARN...).
CONFIG_HOLDERS = (
    "org.apache.spark.internal.config.package$",
    "org.apache.spark.internal.config.Python$",
    "org.apache.spark.internal.config.UI$",
    "org.apache.spark.internal.config.Deploy$",
    "org.apache.spark.internal.config.Worker$",
    "org.apache.spark.internal.config.Network$",
    "org.apache.spark.internal.config.Status$",
    "org.apache.spark.internal.config.History$",
    "org.apache.spark.internal.config.Kryo$",
    "org.apache.spark.sql.internal.SQLConf$",
    "org.apache.spark.sql.internal.StaticSQLConf$",
    "org.apache.spark.deploy.yarn.config.package$",
)
# Families Spark reads by pattern rather than as registered entries.
PATTERN_KEYS = re.compile(
    r"spark\.(driver|executor|task)\.resource\.[A-Za-z0-9_-]+\.(amount|discoveryScript|vendor)"
    r"|spark\.(executorEnv|yarn\.appMasterEnv|hadoop|driverEnv)\..+"
)


def unknown_keys(jvm, keys) -> list[str]:
    """The keys (sorted) that this JVM's Spark does not define."""
    for holder in CONFIG_HOLDERS:
        try:
            jvm.java.lang.Class.forName(holder)  # runs its static initialiser: registers entries
        except Exception:  # a holder this Spark version lacks is no error
            pass
    registry = jvm.org.apache.spark.internal.config.ConfigEntry
    return sorted(key for key in keys if not PATTERN_KEYS.fullmatch(key) and registry.findEntry(key) is None)


def spark_version(jvm) -> str:
    return jvm.org.apache.spark.package.SPARK_VERSION()
