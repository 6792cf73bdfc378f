"""Cost arithmetic for the report: per million images, and a 300-million-image run on EMR.

The throughput of one instance is the steady per-core throughput measured in the local
runs times the instance's vCPUs (per-core rate = steady images/s / cores of the local run).
That assumes throughput grows linearly with cores (each core runs its own task: decode and
inference are CPU-bound and independent per image) and that an EMR vCPU is as fast as a
vCPU here; YARN's and the OS's share of each node is ignored. GPU instances are costed only
from a measurement made on a GPU.

    cost per 1M images = (instance $/h + EMR $/h) / (images/s per instance * 3600) * 1e6
    nodes for N images in H hours = ceil(N / (H * 3600 * images/s per instance))
    run cost = nodes * (instance + EMR) $/h * run hours + master (on-demand + EMR) $/h * run hours

EMR Serverless bills the vCPUs and memory of each worker while it runs; an executor of the
profile (spark.executor.cores, memory plus overhead) is one worker at the same per-core rate:

    cost per 1M images = (vCPUs * $/vCPU-h + GB * $/GB-h) / (per-core rate * vCPUs * 3600) * 1e6

(the driver, the 20 GB of free disk per worker and start-up are left out: per million images
they are small beside the executors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

SECONDS_PER_HOUR = 3600.0
PRICE_KEYS = ("as_of", "compiled_on", "region", "currency", "sources", "master", "instances")
INSTANCE_KEYS = ("vcpus", "on_demand_usd_h", "spot_usd_h", "emr_usd_h")
MARKETS = ("on_demand", "spot")
SERVERLESS_KEYS = ("vcpu_usd_h", "gb_usd_h")
# Spark's default executor memory overhead: max(384 MiB, 10% of spark.executor.memory).
OVERHEAD_FACTOR, OVERHEAD_MIN_GIB = 0.10, 384 / 1024
_SIZE_UNITS = {"k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0}


class PriceError(ValueError):
    """The price table is missing a key or has a bad value."""


@dataclass(frozen=True)
class Instance:
    name: str
    vcpus: int
    on_demand_usd_h: float
    spot_usd_h: float
    emr_usd_h: float
    arch: str = "x86_64"
    gpu: str | None = None
    role: str = "worker"  # "master": only ever the master node, left out of the worker rows
    note: str = ""

    def usd_h(self, market: str) -> float:
        """EC2 price per hour in a market ('on_demand' or 'spot'), without EMR."""
        if market not in MARKETS:
            raise ValueError(f"market {market!r}: expected one of {MARKETS}")
        return self.on_demand_usd_h if market == "on_demand" else self.spot_usd_h


@dataclass(frozen=True)
class ServerlessPrices:
    """EMR Serverless: per vCPU-hour and per GB-hour of memory of the workers (x86_64)."""

    vcpu_usd_h: float
    gb_usd_h: float
    as_of: str = ""
    note: str = ""


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    compiled_on: str
    region: str
    currency: str
    sources: list[str]
    master: str
    instances: dict[str, Instance]
    verified: bool = False
    summary_instance: str = ""
    summary_market: str = "on_demand"
    serverless: ServerlessPrices | None = None


def _serverless_prices(path: str | Path, spec: dict | None) -> ServerlessPrices | None:
    if spec is None:
        return None
    for key in SERVERLESS_KEYS:
        if not isinstance(spec.get(key), (int, float)) or spec[key] <= 0:
            raise PriceError(f"{path}: serverless.{key}={spec.get(key)!r}: expected a number > 0")
    return ServerlessPrices(float(spec["vcpu_usd_h"]), float(spec["gb_usd_h"]), str(spec.get("as_of", "")), spec.get("note", ""))


def load_prices(path: str | Path) -> PriceTable:
    """Read and validate conf/prices.yaml."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    missing = [k for k in PRICE_KEYS if k not in data]
    if missing:
        raise PriceError(f"{path}: missing {', '.join(missing)} (a price table must be dated and name its source)")
    instances = {}
    for name, spec in data["instances"].items():
        absent = [k for k in INSTANCE_KEYS if k not in spec]
        if absent:
            raise PriceError(f"{path}: instances.{name} lacks {', '.join(absent)}")
        for key in INSTANCE_KEYS:
            if not isinstance(spec[key], (int, float)) or spec[key] <= 0:
                raise PriceError(f"{path}: instances.{name}.{key}={spec[key]!r}: expected a number > 0")
        instances[name] = Instance(
            name=name,
            vcpus=int(spec["vcpus"]),
            on_demand_usd_h=float(spec["on_demand_usd_h"]),
            spot_usd_h=float(spec["spot_usd_h"]),
            emr_usd_h=float(spec["emr_usd_h"]),
            arch=spec.get("arch", "x86_64"),
            gpu=spec.get("gpu"),
            role=spec.get("role", "worker"),
            note=spec.get("note", ""),
        )
    if data["master"] not in instances:
        raise PriceError(f"{path}: master {data['master']!r} is not in instances")
    summary_instance = data.get("summary_instance", next(iter(instances)))
    if summary_instance not in instances:
        raise PriceError(f"{path}: summary_instance {summary_instance!r} is not in instances")
    if data.get("summary_market", "on_demand") not in MARKETS:
        raise PriceError(f"{path}: summary_market must be one of {MARKETS}")
    return PriceTable(
        as_of=str(data["as_of"]),
        compiled_on=str(data["compiled_on"]),
        region=data["region"],
        currency=data["currency"],
        sources=list(data["sources"]),
        master=data["master"],
        instances=instances,
        verified=bool(data.get("verified", False)),
        summary_instance=summary_instance,
        summary_market=data.get("summary_market", "on_demand"),
        serverless=_serverless_prices(path, data.get("serverless")),
    )


def per_core_rate(steady_images_per_s: float, cores: int) -> float:
    """Steady images/s per core of a local run on `cores` cores."""
    if cores <= 0:
        raise ValueError("cores must be > 0")
    return steady_images_per_s / cores


def instance_rate(per_core: float, vcpus: int) -> float:
    """Images/s of one instance, linear in cores (the stated assumption)."""
    return per_core * vcpus


def cost_per_million(instance_usd_h: float, emr_usd_h: float, images_per_s: float) -> float:
    """USD per 1,000,000 images on one instance at images_per_s, EMR uplift included."""
    if images_per_s <= 0:
        raise ValueError("images_per_s must be > 0")
    return (instance_usd_h + emr_usd_h) / (images_per_s * SECONDS_PER_HOUR) * 1e6


def nodes_needed(total_images: float, hours: float, images_per_s_per_node: float) -> int:
    """Worker nodes needed to tag total_images within hours."""
    if images_per_s_per_node <= 0 or hours <= 0:
        raise ValueError("rate and hours must be > 0")
    return max(1, math.ceil(total_images / (hours * SECONDS_PER_HOUR * images_per_s_per_node) - 1e-9))


@dataclass(frozen=True)
class Projection:
    instance: str
    market: str
    images_per_s_per_node: float
    cost_per_million_usd: float
    nodes: int
    run_hours: float
    workers_usd: float
    master_usd: float

    @property
    def total_usd(self) -> float:
        return self.workers_usd + self.master_usd


def project(
    prices: PriceTable,
    instance: str,
    market: str,
    images_per_s_per_node: float,
    *,
    total_images: float = 300e6,
    hours: float = 24.0,
) -> Projection:
    """Cost of tagging total_images within hours on `instance` workers plus one on-demand master."""
    node = prices.instances[instance]
    master = prices.instances[prices.master]
    nodes = nodes_needed(total_images, hours, images_per_s_per_node)
    run_hours = total_images / (nodes * images_per_s_per_node * SECONDS_PER_HOUR)
    workers = nodes * (node.usd_h(market) + node.emr_usd_h) * run_hours
    master_usd = (master.on_demand_usd_h + master.emr_usd_h) * run_hours
    return Projection(
        instance=instance,
        market=market,
        images_per_s_per_node=images_per_s_per_node,
        cost_per_million_usd=cost_per_million(node.usd_h(market), node.emr_usd_h, images_per_s_per_node),
        nodes=nodes,
        run_hours=run_hours,
        workers_usd=workers,
        master_usd=master_usd,
    )


def projections(
    prices: PriceTable,
    per_core: float,
    *,
    gpu_images_per_s: float | None = None,
    total_images: float = 300e6,
    hours: float = 24.0,
) -> list[dict]:
    """One row per (worker instance type, market); GPU types n/a without a GPU measurement."""
    rows = []
    for name, inst in prices.instances.items():
        if inst.role == "master":
            continue
        for market in MARKETS:
            rate = gpu_images_per_s if inst.gpu else instance_rate(per_core, inst.vcpus)
            row = {"instance": name, "market": market, "vcpus": inst.vcpus, "arch": inst.arch, "gpu": inst.gpu}
            if not rate:
                row.update(available=False, reason="no GPU measurement in the runs" if inst.gpu else "no rate")
            else:
                p = project(prices, name, market, rate, total_images=total_images, hours=hours)
                row.update(
                    available=True,
                    images_per_s_per_node=p.images_per_s_per_node,
                    cost_per_million_usd=p.cost_per_million_usd,
                    nodes=p.nodes,
                    run_hours=p.run_hours,
                    workers_usd=p.workers_usd,
                    master_usd=p.master_usd,
                    total_usd=p.total_usd,
                )
            rows.append(row)
    return rows


def size_gib(value: str) -> float:
    """A Spark size ("6g", "512m", "2048k"; a bare number is MiB, as Spark reads executor memory) in GiB."""
    text = str(value).strip().lower().removesuffix("b")
    if text and text[-1] in _SIZE_UNITS:
        return float(text[:-1]) * _SIZE_UNITS[text[-1]]
    return float(text) / 1024


def executor_size(spark_conf: dict) -> tuple[int, float]:
    """(vCPUs, GB) of one executor of a profile's spark.conf: memory plus overhead, rounded up to whole GB
    (EMR Serverless sizes workers in whole GB)."""
    cores = int(spark_conf.get("spark.executor.cores", 1))
    memory = size_gib(spark_conf.get("spark.executor.memory", "1g"))
    overhead = spark_conf.get("spark.executor.memoryOverhead")
    extra = size_gib(overhead) if overhead is not None else max(OVERHEAD_MIN_GIB, OVERHEAD_FACTOR * memory)
    return cores, float(math.ceil(memory + extra - 1e-9))


def serverless_cost_per_million(prices: ServerlessPrices, per_core: float, vcpus: int, memory_gb: float) -> float:
    """USD per 1,000,000 images on EMR Serverless workers of vcpus and memory_gb at per_core images/s per vCPU."""
    if per_core <= 0 or vcpus <= 0:
        raise ValueError("per_core and vcpus must be > 0")
    usd_h = vcpus * prices.vcpu_usd_h + memory_gb * prices.gb_usd_h
    return usd_h / (instance_rate(per_core, vcpus) * SECONDS_PER_HOUR) * 1e6


def serverless_projections(prices: PriceTable, per_core: float, profiles: dict[str, dict]) -> list[dict]:
    """One row per profile (name -> its resolved spark.conf): its executor as a Serverless worker and
    the cost per million images, beside EC2's. Empty without Serverless prices; GPU profiles are n/a."""
    if prices.serverless is None:
        return []
    rows = []
    for name, spark_conf in profiles.items():
        vcpus, memory_gb = executor_size(spark_conf)
        row = {"profile": name, "vcpus": vcpus, "memory_gb": memory_gb}
        if any(key.startswith("spark.executor.resource.gpu.") for key in spark_conf):
            row.update(available=False, reason="EMR Serverless has no GPU workers")
        else:
            row.update(
                available=True,
                images_per_s_per_worker=instance_rate(per_core, vcpus),
                cost_per_million_usd=serverless_cost_per_million(prices.serverless, per_core, vcpus, memory_gb),
            )
        rows.append(row)
    return rows
