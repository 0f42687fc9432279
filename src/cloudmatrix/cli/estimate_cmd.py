"""`cloudmatrix estimate`: one prefill batch, decode step or co-located step priced operator by operator.
Registered on the app in app.py."""

from typing import Annotated, Any

import typer

from cloudmatrix.cli.common import JsonFlag, _checkpoint_precision, _emit_json, _run, out
from cloudmatrix.errors import CloudMatrixError


def estimate(
    system: Annotated[str, typer.Option(help="System id, e.g. cloudmatrix384.")] = "cloudmatrix384",
    model: Annotated[str, typer.Option(help="Model id or path to a config.json.")] = "deepseek-r1",
    phase: Annotated[str, typer.Option(help="prefill, decode or aggregated.")] = "decode",
    chips: Annotated[int, typer.Option(help="Chips (NPUs/GPUs) in the instance.")] = 160,
    ep: Annotated[int | None, typer.Option(help="Expert-parallel degree in dies (default: all dies).")] = None,
    batch_per_chip: Annotated[
        float | None, typer.Option(help="Decode: sequences per chip (default: the paper's 96).")
    ] = None,
    tokens_per_chip: Annotated[int | None, typer.Option(help="Prefill: tokens per chip per batch.")] = None,
    input_len: Annotated[int, typer.Option(help="Prompt length (tokens).")] = 4096,
    output_len: Annotated[int, typer.Option(help="Output length (tokens).")] = 256,
    kv_len: Annotated[int | None, typer.Option(help="Decode: mean KV length (default input + output/2).")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="int8, fp8, fp4, bf16, mxfp8 or hif8 weights, the GEMM compute format too unless refined, or "
            "int4 weights with --activation-precision int8 (W4A8) or bf16 (W4A16) (default: the checkpoint's "
            "quantization_config for a model from a path or the Hugging Face cache, else int8)."
        ),
    ] = None,
    activation_precision: Annotated[
        str | None, typer.Option(help="GEMM inputs and compute format (e.g. bf16 for W4A16; default: --precision).")
    ] = None,
    kv_precision: Annotated[str, typer.Option(help="KV-cache precision.")] = "bf16",
    mtp: Annotated[
        int | None,
        typer.Option(help="MTP speculative tokens per step (default: the paper's 1 in decode, 0 in prefill)."),
    ] = None,
    mtp_acceptance: Annotated[
        float | None, typer.Option(help="MTP acceptance rate, an input never fitted (default: the paper's 0.7).")
    ] = None,
    speculation: Annotated[
        str,
        typer.Option(
            help="Source of the --mtp draft tokens: mtp (the model's MTP layers), ngram (prompt lookup on the "
            "host, no draft pass on the device) or eagle3 (an EAGLE-3 draft head: k passes of one layer)."
        ),
    ] = "mtp",
    draft_topk: Annotated[
        int,
        typer.Option(
            help="EAGLE-3 tree drafting: candidates each draft pass after the first expands per sequence "
            "(SGLang's --speculative-eagle-topk; 1: a chain)."
        ),
    ] = 1,
    verify_tokens: Annotated[
        int | None,
        typer.Option(
            help="EAGLE-3 tree drafting: tokens the verify pass checks per sequence (SGLang's "
            "--speculative-num-draft-tokens; default 1 + --mtp)."
        ),
    ] = None,
    eplb: Annotated[
        str,
        typer.Option(
            help="perfect (uniform load), default (EPLB replicas, the paper's) or none (no redundant copies)."
        ),
    ] = "default",
    routing: Annotated[
        str | None,
        typer.Option(
            help="Expert routing: uniform, zipf:S[@c=C] or a per-expert histogram file (default: the model's)."
        ),
    ] = None,
    cached_fraction: Annotated[
        float, typer.Option(help="Prefill: share of each prompt served from the EMS context cache.")
    ] = 0.0,
    cache_plane: Annotated[str, typer.Option(help="Prefill: read cached KV over ub or vpc.")] = "ub",
    microbatch: Annotated[
        bool | None, typer.Option("--microbatch/--no-microbatch", help="Two-microbatch pipeline (default: the faster).")
    ] = None,
    attention_tp: Annotated[int, typer.Option(help="Prefill MLA TP group (dies; assumed 4).")] = 4,
    tp: Annotated[
        int,
        typer.Option(
            help="Attention tensor-parallel group (dies) for attention, dense FFN and LM head (1: DP attention)."
        ),
    ] = 1,
    moe_tp: Annotated[
        int, typer.Option(help="Expert tensor parallelism: dies each expert's FFN columns are split over.")
    ] = 1,
    cp: Annotated[
        int, typer.Option(help="Prefill context parallelism: dies that split each prompt and all-gather its KV.")
    ] = 1,
    redundant_experts: Annotated[
        int | None, typer.Option(help="Extra routed-expert slots for EPLB replicas (default: per layout; 0 allowed).")
    ] = None,
    shared_dies: Annotated[
        int | None,
        typer.Option(
            help="Dies holding only a shared-expert copy (default: the paper's 32 on its EP320 instance; "
            "ranks x shared / (top-k + shared) when EP exceeds the routed experts; else local on every die)."
        ),
    ] = None,
    reserve_gb: Annotated[
        float | None, typer.Option(help="HBM per die kept from weights and KV (default: the stack's, else the chip's).")
    ] = None,
    offload_gb: Annotated[
        float, typer.Option(help="Routed-expert weights per die kept in CPU memory, streamed over the CPU link.")
    ] = 0.0,
    chunk_tokens_per_chip: Annotated[
        float | None,
        typer.Option(help="Aggregated: prompt tokens per chip per step (default: keeps pace with the decode batch)."),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option(help="Serving stack whose host time per step is added (default: the system's published one)."),
    ] = None,
    kernels: Annotated[
        str | None,
        typer.Option(
            help="GEMM or fused attention kernels the deployment runs, comma-separated (e.g. deepgemm, "
            "npu-fused-infer-attention), each measured on the chip: wherever one has a curve for an op they "
            "replace the stack's list (default: the stack's)."
        ),
    ] = None,
    ffn_chips: Annotated[
        int | None,
        typer.Option(
            help="Decode with attention-FFN disaggregation: chips of the FFN (expert) pool; --chips and "
            "--batch-per-chip are then the attention pool's."
        ),
    ] = None,
    ffn_ep: Annotated[int | None, typer.Option(help="AFD: EP degree of the FFN pool (default: all its dies).")] = None,
    ffn_precision: Annotated[
        str | None, typer.Option(help="AFD: the experts' weight format (default: --precision).")
    ] = None,
    microbatches: Annotated[int, typer.Option(help="AFD: ping-pong microbatches per step.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Steady-state analytic estimate of one prefill batch, decode step, or aggregated (co-located) step. With
    no flags: the paper's decode instance (160 NPUs, EP320, batch 96, MTP 1 at 70 %, INT8, EPLB); each flag
    overrides its part."""
    from cloudmatrix.catalog.presets import default_stack
    from cloudmatrix.deploy import Deployment, Eplb, Phase
    from cloudmatrix.deployment import paper_deployments
    from cloudmatrix.estimate import estimate as run_estimate

    weights = _checkpoint_precision(model, precision, "int8")

    def build() -> dict[str, Any]:
        ph = _choice("phase", phase, Phase)
        decodes = ph != Phase.PREFILL
        paper = paper_deployments()[Phase.DECODE]  # what the flags left out: the paper's decode instance
        draft = (paper.mtp if decodes else 0) if mtp is None else mtp
        accept = (paper.mtp_acceptance if draft else 0.0) if mtp_acceptance is None else mtp_acceptance
        dep = Deployment(
            phase=ph,
            num_chips=chips,
            ep=ep,
            batch_per_chip=(paper.batch_per_chip if decodes else None) if batch_per_chip is None else batch_per_chip,
            tokens_per_chip=tokens_per_chip,
            input_len=input_len,
            output_len=output_len,
            kv_len=kv_len,
            precision=weights,
            activation_precision=activation_precision,
            kv_precision=kv_precision,
            mtp=draft,
            mtp_acceptance=accept,
            speculation=speculation,
            draft_topk=draft_topk,
            verify_tokens=verify_tokens,
            eplb=_choice("eplb", eplb, Eplb),
            routing=routing,
            cached_fraction=cached_fraction,
            cache_plane=cache_plane,
            microbatch=microbatch,
            attention_tp=attention_tp,
            tp=tp,
            moe_tp=moe_tp,
            cp=cp,
            redundant_experts=redundant_experts,
            shared_dies=shared_dies if shared_dies is not None else _paper_shared(paper, model, chips, ep, moe_tp),
            reserve_gb=reserve_gb,
            offload_gb=offload_gb,
            chunk_tokens_per_chip=chunk_tokens_per_chip,
            stack=stack or default_stack(system),
            kernels=tuple(k.strip() for k in kernels.split(",")) if kernels else (),
        )
        if ffn_chips is not None:
            return _afd(system, model, dep, ffn_chips, ffn_ep, ffn_precision, microbatches)
        return run_estimate(system, model, dep).to_dict() | {"stack": dep.stack}

    d = _run(build)
    if "afd" in d:
        if as_json:
            _emit_json(d)
        else:
            from cloudmatrix.cli.afd_out import afd_tables

            for table in afd_tables(d):
                out.print(table)
        return
    from cloudmatrix.studies.intervals import ESTIMATE_METRICS, attach

    attach(
        d,
        system,
        ESTIMATE_METRICS,
        d["stack"],
        {"model": model, "weights": precision, "isl": input_len, "steady": True, "shapes": d["shape_extrapolating"]},
    )
    if as_json:
        _emit_json(d)
    else:
        from cloudmatrix.cli import render

        for table in render.estimate_table(d):
            out.print(table)


def _paper_shared(paper: Any, model: str, chips: int, ep: int | None, moe_tp: int) -> int | None:
    """The paper's shared-expert dies where the flags keep its EP320 decode instance (for a model they apply to)."""
    from cloudmatrix.catalog.models import load_model
    from cloudmatrix.deploy import stated_shared_dies

    if chips != paper.num_chips or (ep or paper.ep) != paper.ep or moe_tp != 1:
        return None
    return stated_shared_dies(load_model(model), paper.ep, paper.shared_dies)


def _afd(
    system: str, model: str, attention: Any, ffn_chips: int, ffn_ep: int | None, ffn_precision: str | None, mb: int
) -> dict[str, Any]:
    """The AFD estimate beside the same dies run as one decode instance without AFD."""
    from cloudmatrix.cost.afd_result import estimate_afd, same_dies_decode
    from cloudmatrix.deployment import AfdDeployment
    from cloudmatrix.estimate import estimate as run_estimate

    afd = AfdDeployment(
        attention=attention, ffn_chips=ffn_chips, ffn_ep=ffn_ep, ffn_precision=ffn_precision, microbatches=mb
    )
    d = estimate_afd(system, model, afd).to_dict() | {"stack": attention.stack}
    try:
        same = run_estimate(system, model, same_dies_decode(afd))
        d["same_dies"] = {
            "step_ms": same.step.step_s * 1e3,
            "tpot_ms": same.tpot_s * 1e3,
            "throughput_per_chip_tok_s": same.throughput_per_chip_tok_s,
        }
    except CloudMatrixError as e:  # the same sequences may not fit without AFD: say so, keep the AFD answer
        d["same_dies"] = {"refused": str(e)}
    return d


def _choice(field: str, value: str, enum: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise CloudMatrixError(f"{field} '{value}' is not one of: {', '.join(e.value for e in enum)}") from None
