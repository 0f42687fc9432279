"""Feasibility checks of a deployment's formats and layout, each failing with the numbers that do not fit
(called by ``deploy.plan``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudmatrix.catalog.hardware import Hardware
from cloudmatrix.catalog.kernels import check_kernels_measured_on
from cloudmatrix.catalog.models import ModelSpec
from cloudmatrix.catalog.stacks import check_runs_on, load_stack
from cloudmatrix.deployment import Phase
from cloudmatrix.errors import InfeasibleDeploymentError
from cloudmatrix.units import BYTES_PER_ELEMENT, WEIGHT_ONLY_FORMATS

# Enum members as module globals: reading one off its class costs ~14x a global in Python 3.11 (pricing.py)
_PREFILL = Phase.PREFILL

if TYPE_CHECKING:
    from cloudmatrix.deployment import Deployment


def check_choice(field: str, value: str, valid: dict[str, float]) -> None:
    if value not in valid:
        raise InfeasibleDeploymentError(f"{field} '{value}' is not one of: {', '.join(valid)}")


def check_stack(d: Deployment, hardware: Hardware) -> None:
    """A known stack (an unknown one fails naming the known ones) with a build for the system's vendor."""
    if d.stack is not None:
        load_stack(d.stack)
        check_runs_on(d.stack, hardware.system.vendor, hardware.system.id)


def check_kernels(d: Deployment, hardware: Hardware) -> None:
    """Each kernel the deployment names is measured on the chip (its own curves or those it takes)."""
    if d.kernels:
        chip = hardware.chip
        check_kernels_measured_on(d.kernels, (chip.id, chip.curves_chip), chip.name)


# the formats a GEMM, the KV cache or a dispatch can be computed in (not the weight-only ones)
_COMPUTED_FORMATS = {p: b for p, b in BYTES_PER_ELEMENT.items() if p not in WEIGHT_ONLY_FORMATS}


def check_formats(d: Deployment, hardware: Hardware) -> None:
    """Weights may be stored narrower than the chip computes (W4A16), but GEMMs run in a format the chip
    has units for, and never narrower than their weights."""
    check_choice("precision", d.precision, BYTES_PER_ELEMENT)
    computed = _COMPUTED_FORMATS
    check_choice("kv precision", d.kv_precision, computed)
    if d.dispatch_precision:
        check_choice("dispatch precision", d.dispatch_precision, computed)
    if d.activation_precision:
        check_choice("activation precision", d.activation_precision, computed)
    compute = d.activation_precision or d.precision
    native = hardware.chip.die.peak_tflops
    if compute not in native:
        wider = [p for p in native if BYTES_PER_ELEMENT[p] >= BYTES_PER_ELEMENT[d.precision]]
        # the narrowest native format of the weights' family that holds them (int4: int8, W4A8; hif8: bf16)
        family = d.precision.startswith("int")
        closest = sorted(wider, key=lambda p: (p.startswith("int") != family, BYTES_PER_ELEMENT[p]))
        hint = (
            f" (or keep {d.precision} weights with --activation-precision {(closest or list(native))[0]})"
            if not d.activation_precision
            else ""
        )
        raise InfeasibleDeploymentError(
            f"compute format {compute}: the {hardware.chip.name} computes {', '.join(native)}; choose one of "
            f"those{hint}"
        )
    if BYTES_PER_ELEMENT[compute] < BYTES_PER_ELEMENT[d.precision]:
        raise InfeasibleDeploymentError(
            f"activation precision {compute} is narrower than the {d.precision} weights; GEMMs compute in the "
            "wider of the two"
        )


def check_offload(d: Deployment, hardware: Hardware, model: ModelSpec) -> None:
    if d.offload_gb == 0:
        return
    cpu = hardware.system.cpu
    if not (0 < d.offload_gb < float("inf")):
        raise InfeasibleDeploymentError(f"offload {d.offload_gb} GB per die must be a positive number of GB")
    if model.moe is None:
        raise InfeasibleDeploymentError(f"offload streams routed-expert weights; {model.id} is dense")
    if cpu.link_gb_s_per_chip is None:
        raise InfeasibleDeploymentError(f"{hardware.system.id} has no CPU-memory link in the catalog to offload over")
    dram = cpu.dram_gb_per_socket.value * cpu.sockets_per_node.value
    per_node = d.offload_gb * hardware.dies_per_node
    if per_node > dram:
        raise InfeasibleDeploymentError(
            f"offload {d.offload_gb:g} GB per die x {hardware.dies_per_node} dies = {per_node:g} GB exceeds the "
            f"{dram:g} GB of CPU memory per node"
        )


def check_context_parallel(d: Deployment, model: ModelSpec, dies: int) -> None:
    """A CP group splits one prompt's prefill over its dies, each running the whole attention on its share
    of the tokens (SGLang's NSA prefill context parallelism: attention TP 1 inside the group)."""
    if d.cp == 1:
        return
    if d.phase != _PREFILL:
        raise InfeasibleDeploymentError(
            f"context parallelism (cp {d.cp}) splits a prompt's prefill; a {d.phase.value} instance runs with cp 1"
        )
    if dies % d.cp:
        raise InfeasibleDeploymentError(
            f"context parallelism {d.cp} must divide the {dies} dies of {d.num_chips} chips"
        )
    if d.tp != 1:
        raise InfeasibleDeploymentError(
            f"context parallelism {d.cp} runs the whole attention on every rank of the group: use tp 1, not {d.tp}"
        )
    if model.compressed is not None or model.linear is not None:
        raise InfeasibleDeploymentError(f"context parallelism is priced for MLA and GQA attention, not {model.id}'s")


def check_layout(d: Deployment, model: ModelSpec, dies: int) -> None:
    """Attention TP groups must tile the instance and split the heads; expert groups (EP ranks x expert TP)
    must tile it too, split each expert's columns evenly, and hold whole attention TP groups."""
    heads = model.attention.num_heads
    if d.tp < 1 or dies % d.tp:
        raise InfeasibleDeploymentError(f"tensor parallelism {d.tp} must divide the {dies} dies of {d.num_chips} chips")
    if heads % d.tp:
        raise InfeasibleDeploymentError(
            f"tensor parallelism {d.tp} must divide the {heads} attention heads of {model.id}"
        )
    if not 1 <= d.moe_tp <= dies:
        raise InfeasibleDeploymentError(f"expert TP {d.moe_tp} must be between 1 and the {dies} dies of the instance")
    if model.moe is None:
        if d.moe_tp != 1:
            raise InfeasibleDeploymentError(f"model {model.id} is dense: it has no experts for expert TP {d.moe_tp}")
        return
    if model.moe.intermediate % d.moe_tp:
        raise InfeasibleDeploymentError(
            f"expert TP {d.moe_tp} must divide the {model.moe.intermediate} FFN columns of {model.id}'s experts"
        )
    ep = d.ep or dies // d.moe_tp
    group = ep * d.moe_tp
    if ep < 1 or dies % group:
        what = f"EP degree {ep}" if d.moe_tp == 1 else f"EP{ep} x expert TP{d.moe_tp} = {group} dies"
        raise InfeasibleDeploymentError(f"{what} must divide the {dies} dies of {d.num_chips} chips")
    if d.tp > 1 and group % d.tp:
        raise InfeasibleDeploymentError(
            f"an attention TP group ({d.tp} dies) must sit inside one expert group "
            f"(EP{ep} x TP{d.moe_tp} = {group} dies)"
        )


def verify_tokens_per_seq(d: Deployment) -> int:
    """Tokens the verify pass checks per sequence: the chain's 1 + k, or the token tree's size."""
    return d.verify_tokens if d.verify_tokens is not None else 1 + d.mtp


def check_draft_tree(d: Deployment) -> None:
    """A token tree is EAGLE's: k draft passes, the first over one token per sequence and each later one over
    the top-k candidates, verified as a tree that holds at most 1 + topk + (k - 1) x topk^2 of them (SGLang's
    bound). A chain (topk 1) verifies exactly 1 + k."""
    tree = d.draft_topk > 1
    if (tree or d.verify_tokens is not None) and d.speculation != "eagle3":
        raise InfeasibleDeploymentError(
            f"draft_topk {d.draft_topk} / verify_tokens {d.verify_tokens}: token trees are drafted by an "
            f"EAGLE-3 head (speculation eagle3), not '{d.speculation}'"
        )
    if tree and not d.mtp:
        raise InfeasibleDeploymentError(f"draft_topk {d.draft_topk} needs draft passes (--mtp >= 1)")
    n = verify_tokens_per_seq(d)
    if not tree and n != 1 + d.mtp:
        raise InfeasibleDeploymentError(
            f"verify_tokens {n}: a chain of {d.mtp} drafts (draft_topk 1) verifies 1 + mtp = {1 + d.mtp} tokens"
        )
    top = 1 + d.draft_topk + max(d.mtp - 1, 0) * d.draft_topk**2
    if tree and not 2 <= n <= top:
        raise InfeasibleDeploymentError(
            f"verify_tokens {n}: expected 2 to {top} for {d.mtp} draft passes of top-{d.draft_topk}"
        )
