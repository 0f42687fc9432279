"""Hardware catalog: chips (per-die compute, memory, kernel efficiency) and systems (nodes, planes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from cloudmatrix.catalog.record import Record, check, field
from cloudmatrix.catalog.sourced import DATA_DIR, Sourced, parse_file, read_yaml
from cloudmatrix.errors import CloudMatrixError, ConfigError, UnknownIdError
from cloudmatrix.units import GB_DECIMAL, PETA, TB_DECIMAL, TERA

HARDWARE_DIR = DATA_DIR / "hardware"


class DieSpec(Record):
    compute_units: Sourced  # matrix engines: AI Cube cores (Ascend) or SMs (NVIDIA)
    vector_units: Sourced | None = None  # separate vector engines (Ascend AIV); None where SMs do both
    # the vector engines' element operations per second (tera, 16-bit lanes) where they are separate: vector
    # ops are priced there, not against the matrix engines' peak
    vector_tops: Sourced | None = None
    peak_tflops: dict[str, Sourced]
    hbm_gb: Sourced
    hbm_bw_gb_s: Sourced

    def peak_flops(self, precision: str) -> float:
        """Dense peak in FLOP/s (or OP/s) for a precision; falls back to the nearest wider one."""
        for p in _PRECISION_FALLBACK[precision]:
            if p in self.peak_tflops:
                return self.peak_tflops[p].value * TERA
        raise KeyError(precision)


# A precision the die lacks natively runs on the next wider unit that can hold it (the 910C has no FP8
# units, so FP8 weights run at the BF16 rate).
_PRECISION_FALLBACK = {
    "fp4": ["fp4", "fp8", "bf16"],
    "fp8": ["fp8", "bf16"],
    "int8": ["int8", "bf16"],
    "bf16": ["bf16"],
    "int4": ["int4", "int8", "bf16"],
    "mxfp8": ["mxfp8", "fp8", "bf16"],
    "hif8": ["hif8", "fp8", "bf16"],
}


class Efficiency(Record):
    gemm_compute: Sourced
    gemm_memory: Sourced
    attention_compute: Sourced
    attention_memory: Sourced
    vector_compute: Sourced
    vector_memory: Sourced
    gemm_serving: Sourced
    # Share of an attention kernel's shorter term (its HBM streaming or its matrix work) hidden under the
    # longer one: 1 (absent) is the roofline's max, 0 a kernel whose loads and matmuls add up.
    attention_overlap: Sourced | None = None

    @staticmethod
    @check("attention_overlap")
    def _a_share(v: Sourced | None) -> Sourced | None:
        if v is not None and not 0.0 <= v.value <= 1.0:
            raise ValueError(f"attention_overlap is a share of the shorter term: 0 to 1, got {v.value}")
        return v


class StreamShare(Record):
    compute: int
    vector: int = 0
    source: str


class MicrobatchSpec(Record):
    """How two microbatches overlap. ``split``: two streams on statically split cores (Ascend decode);
    ``alternate``: one microbatch computes on all cores while the other's communication runs (NVIDIA TBO)."""

    decode_overlap: Literal["split", "alternate"]
    attention: StreamShare | None = None
    moe: StreamShare | None = None
    prefill_comm_units: Sourced | None = None  # cores reserved for communication in prefill (DeepEP normal)


class ChipSpec(Record):
    id: str
    name: str
    family: str
    dies_per_chip: Sourced
    die: DieSpec
    cross_die_bw_gb_s: Sourced | None = None
    efficiency: Efficiency
    launch_us: Sourced
    # start-up of one captured-graph launch that the host does not hide (Ascend: the host prepares each graph's
    # metadata and sampling before launching it); a stack says how many of its launches per step are exposed
    graph_launch_us: Sourced | None = None
    # fixed device cost of one task of a graph captured op by op from eager PyTorch (ACL graph / NPUGraph, or a HIP
    # graph's kernel node): each kernel stays its own task with its start, header and synchronisation (AIC/AIV,
    # or the end-of-kernel release between nodes); a runtime property, not fitted
    graph_task_us: Sourced | None = None
    # the fixed run time of a kernel with next to no work (its waves' dispatch, one memory round trip, the
    # end-of-kernel write-back), measured apart from its launch: what each captured node beyond an op's first
    # (activation quantisation, casts, concatenations, sorting, split-KV reduce) takes on top of
    # ``graph_task_us``, whose bytes the twin does not price (on Ascend, whose ``launch_us`` is 0, every captured
    # task: an op's main kernel too, its start and end response in CANN's Task Duration); unset: not stated (0)
    kernel_floor_us: Sourced | None = None
    # the fixed run time of a decode attention call beyond its launch (``launch_us``), its bytes at the memory
    # efficiency and the nodes an engine counts beside it (KV write, split-KV reduce), read from attention
    # modules timed in captured graphs at decode sizes; priced as ``max(compute, memory + floor)``, so it adds
    # nothing where the op's compute binds; unset: not stated (0)
    attention_floor_us: Sourced | None = None
    microbatch: MicrobatchSpec
    runtime_reserve_gb: Sourced
    # a chip without GEMM microbenchmarks of its own may take a sibling's measured share-of-peak curves
    # (same SM design: B300 from B200, GB300 from GB200); the source says why, always an assumption
    kernel_curves_from: str | None = None
    kernel_curves_source: str = ""

    @property
    def curves_chip(self) -> str:
        """The chip whose measured GEMM curves price this one's GEMMs."""
        return self.kernel_curves_from or self.id

    @property
    def num_dies(self) -> int:
        return int(self.dies_per_chip.value)

    @property
    def hbm_bytes_per_die(self) -> float:
        return self.die.hbm_gb.value * GB_DECIMAL

    @property
    def hbm_bw_bytes_per_s_per_die(self) -> float:
        return self.die.hbm_bw_gb_s.value * GB_DECIMAL


class CpuSpec(Record):
    name: str
    sockets_per_node: Sourced
    dram_gb_per_socket: Sourced
    dram_bw_gb_s_per_socket: Sourced
    ub_bw_gb_s_per_socket: Sourced | None = None
    link_name: str = ""  # the accelerator's link to CPU memory (weight offload streams over it)
    link_gb_s_per_chip: Sourced | None = None  # per accelerator package and direction
    link_efficiency: Sourced | None = None


class SwitchSpec(Record):
    l1_per_node: Sourced
    l1_uplink_gb_s: Sourced
    l2_subplanes: Sourced
    l2_per_subplane: Sourced
    l2_ports: Sourced


class EpCommSpec(Record):
    """Calibrated constants of the MoE dispatch/combine operators on a plane (fused or DeepEP-style)."""

    scale_bytes_per_token: Sourced  # quantisation scales sent with each INT8/FP8 token
    # CANN's fused operators send a token once per destination die; DeepEP low-latency once per expert.
    coalesce_per_die: bool
    base_latency_us: Sourced
    sync_us_per_doubling: Sourced | None = None  # rounds of the barrier that grow with log2(EP)
    dispatch_efficiency: Sourced
    combine_efficiency: Sourced


class Plane(Record):
    """A network plane with per-die unidirectional bandwidth. ``*_local`` values apply inside a node."""

    name: str
    bw_gb_s_per_die: Sourced
    latency_us: Sourced
    efficiency: Sourced
    latency_us_local: Sourced | None = None
    efficiency_local: Sourced | None = None
    ep_comm: EpCommSpec | None = None

    def link(self, local: bool) -> tuple[float, float]:
        """(latency in s, bulk efficiency) inside a node or across nodes."""
        lat = self.latency_us_local if local and self.latency_us_local else self.latency_us
        eff = self.efficiency_local if local and self.efficiency_local else self.efficiency
        return lat.value * 1e-6, eff.value


class StoragePlane(Record):
    name: str
    bw_gb_s_per_node: Sourced
    latency_us: Sourced
    efficiency: Sourced


class Planes(Record):
    scale_up: Plane
    scale_out: Plane
    storage: StoragePlane | None = None


class EmsSpec(Record):
    """EMS, the UB-attached memory pool in CPU DRAM with an EVS SSD tier below it, and the OBS bucket that
    models load from (P3 §4.4). Optional: systems without a pooled-DRAM service leave it out."""

    dram_share: Sourced  # fraction of each node's DRAM the pool may use; the rest is OS, buffers, model cache
    block_tokens: Sourced  # tokens per KV block of the context cache (P3 §4.4.2: 128-512)
    ssd_gb_per_node: Sourced  # EVS capacity behind each node
    ssd_bw_gb_s_per_node: Sourced  # EVS bandwidth through the node's DPU
    ub_read_efficiency: Sourced  # NPU reads of CPU DRAM over UB, of the socket's UB bandwidth
    obs_bucket_bw_gb_s: Sourced  # object-store bucket bandwidth shared by every concurrent model load
    obs_efficiency: Sourced  # goodput of an OBS load, of the bucket bandwidth
    warm_setup_s: Sourced  # fixed cost of a warm start besides moving the bytes


class SystemSpec(Record):
    id: str
    name: str
    chip: str
    vendor: str
    nodes: Sourced
    chips_per_node: Sourced
    racks: Sourced
    scale_up_domain_chips: Sourced
    cpu: CpuSpec
    switches: SwitchSpec | None = None
    planes: Planes
    ems: EmsSpec | None = None
    power_kw: Sourced
    price_usd: Sourced
    published_totals: dict[str, Sourced] = field(default_factory=dict)

    @property
    def num_chips(self) -> int:
        return int(self.nodes.value * self.chips_per_node.value)

    @property
    def num_cpus(self) -> int:
        return int(self.nodes.value * self.cpu.sockets_per_node.value)


class Hardware(Record):
    """A system together with its chip, as every cost function needs both."""

    system: SystemSpec
    chip: ChipSpec

    @property
    def num_dies(self) -> int:
        return self.system.num_chips * self.chip.num_dies

    @property
    def scale_up_domain_dies(self) -> int:
        return int(self.system.scale_up_domain_chips.value) * self.chip.num_dies

    @property
    def dies_per_node(self) -> int:
        return int(self.system.chips_per_node.value) * self.chip.num_dies

    def totals(self) -> dict[str, float]:
        """Derived system totals, for `catalog systems` and checks against published totals."""
        chips = self.system.num_chips
        die = self.chip.die
        dies = self.num_dies
        cpu = self.system.cpu
        return {
            "chips": chips,
            "dies": dies,
            "cpus": self.system.num_cpus,
            "bf16_pflops": dies * die.peak_flops("bf16") / PETA,
            "int8_pflops": dies * die.peak_flops("int8") / PETA,
            "hbm_tb": dies * die.hbm_gb.value * GB_DECIMAL / TB_DECIMAL,
            "hbm_bw_tb_s": dies * die.hbm_bw_gb_s.value * GB_DECIMAL / TB_DECIMAL,
            "scale_up_tb_s": dies * self.system.planes.scale_up.bw_gb_s_per_die.value * GB_DECIMAL / TB_DECIMAL,
            "dram_tb": self.system.num_cpus * cpu.dram_gb_per_socket.value * GB_DECIMAL / TB_DECIMAL,
            "power_kw": self.system.power_kw.value,
        }


def ems_pool_bytes(hw: Hardware, nodes: int) -> float:
    """Pooled DRAM that EMS can use on ``nodes`` nodes: nodes x sockets x DRAM per socket x the EMS share
    (P3 §4.4.1: every node contributes its CPU-attached DRAM)."""
    ems = hw.system.ems
    if ems is None:
        raise ConfigError(f"system '{hw.system.id}' has no ems section (no pooled-DRAM cache)")
    if nodes < 0:
        raise ValueError(f"nodes must be >= 0 (got {nodes})")
    cpu = hw.system.cpu
    return nodes * cpu.sockets_per_node.value * cpu.dram_gb_per_socket.value * GB_DECIMAL * ems.dram_share.value


_PLAIN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # a catalog id, never a path


@cache
def _hardware_file(path: Path) -> Any:
    return read_yaml(path)


def _ids(kind: str) -> dict[str, Path]:
    """Every id of a kind (ids live inside the files, so listing parses them all)."""
    out = {}
    for path in sorted(HARDWARE_DIR.glob("*.yaml")):
        data = _hardware_file(path)
        if isinstance(data, dict) and ("chip" in data) == (kind == "system"):
            out[str(data.get("id", path.stem))] = path
    return out


@cache
def chip_ids() -> dict[str, Path]:
    return _ids("chip")


@cache
def system_ids() -> dict[str, Path]:
    return _ids("system")


def _path_of(kind: str, item_id: str) -> Path:
    """The file of an id: ``ID.yaml`` when that file holds it (the catalog's convention, read alone), else
    found by listing every file of the kind."""
    direct = HARDWARE_DIR / f"{item_id}.yaml"
    if _PLAIN_ID.fullmatch(item_id) and direct.is_file():
        data = _hardware_file(direct)
        if isinstance(data, dict) and ("chip" in data) == (kind == "system") and data.get("id", item_id) == item_id:
            return direct
    paths = system_ids() if kind == "system" else chip_ids()
    if item_id not in paths:
        raise UnknownIdError(kind, item_id, list(paths))
    return paths[item_id]


@cache
def load_chip(chip_id: str) -> ChipSpec:
    path = _path_of("chip", chip_id)
    return parse_file(ChipSpec, path)


@cache
def load_hardware(system_id: str) -> Hardware:
    path = _path_of("system", system_id)
    system = parse_file(SystemSpec, path)
    # both parts are validated: constructing keeps them as they are, as validating would (tested equal),
    # without building the schema of every hardware class
    return Hardware.model_construct(system=system, chip=load_chip(system.chip))


@cache
def chip_family(system: str) -> str:
    """The system's chip family, or ``unknown`` for systems the catalog does not have (yet)."""
    return _known_or_unknown(system, lambda hw: hw.chip.family)


@cache
def system_vendor(system: str) -> str:
    """The maker of a system's chips, or ``unknown`` for systems the catalog does not have (yet)."""
    return _known_or_unknown(system, lambda hw: hw.system.vendor)


def _known_or_unknown(system: str, read: Callable[[Hardware], str]) -> str:
    try:
        return read(load_hardware(system))
    except CloudMatrixError:
        return "unknown"
