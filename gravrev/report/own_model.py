"""The own-model page's worked arithmetic as text blocks, each number from gravrev.report.budget."""

from __future__ import annotations

from gravrev.report.budget import (
    ACT_BYTES,
    GB,
    Hardware,
    Memory,
    Model,
    Schedule,
    Time,
    stuck_exponent,
)


def _n(x: float) -> str:
    """7e9 -> '7e9', 4096 -> '4096'."""
    return sci(x, 0) if x >= 1e6 else f"{x:g}"


def sci(x: float, digits: int = 1) -> str:
    """1.72e14 -> '1.7e14', 3.05e-5 -> '3.1e-5'."""
    mantissa, exp = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _mins(seconds: tuple[float, float]) -> str:
    return f"{seconds[0] / 60:.0f} to {seconds[1] / 60:.0f} minutes"


def memory_blocks(m: Model, hw: Hardware, s: Schedule, mem: Memory) -> dict[str, str]:
    """Block name -> text, in the page's order."""
    n, e = _n(m.n_params), stuck_exponent(s.lr)
    fits = "within" if mem.mixed <= hw.memory_gb else "over"
    return {
        "mixed": ("bf16 weights 2 B + fp32 master 4 B + Adam m, v 8 B\n"
                  "  + bf16 grads 2 B                           = 16 B/param\n"
                  f"{n} x 16 B = {mem.mixed:.0f} GB before activations: {fits} one "
                  f"{hw.memory_gb:.0f} GB GPU"),
        "bf16": ("bf16 weights 2 B + bf16 grads 2 B + Adam m, v 4 B = 8 B/param\n"
                 f"{n} x 8 B = {mem.bf16:.0f} GB before activations (and AdamW's temporaries)"),
        "stuck": (f"|w| >= 2^{e} ({2.0 ** e:.4f})  ->  last place >= 2^{e - 7}, "
                  f"half of it 2^{e - 8}\n"
                  f"2^{e - 8} = {sci(2.0 ** (e - 8))} > {sci(s.lr, 0)}  ->  "
                  "such a weight never moves"),
        "fp32": f"4 + 4 + 8 = 16 B/param -> {n} x 16 B = {mem.fp32:.0f} GB",
        "lora": (f"adapters per layer = {s.lora_rank} x (4 x ({m.hidden} + {m.hidden})\n"
                 f"                        + 2 x ({m.hidden} + {m.mlp})\n"
                 f"                        + ({m.mlp} + {m.hidden}))   = "
                 f"{mem.lora_adapters // m.layers:,}\n"
                 f"x {m.layers} layers = {mem.lora_adapters:,} "
                 f"(about {mem.lora_adapters / 1e6:.0f} M)\n"
                 f"frozen bf16 weights: {n} x 2 B        = {mem.frozen:.0f} GB\n"
                 f"fp32 adapters, AdamW: {mem.lora_adapters / 1e6:.0f} M x 16 B     = "
                 f"{mem.adapters:.2f} GB"),
        "activations": (f"{m.seq_len} x {s.batch} x {m.hidden} x {ACT_BYTES} B = "
                        f"{mem.act_layer:.2f} GB per layer\n"
                        f"x {m.layers} layers           = {mem.act:.0f} GB\n"
                        f"logits: {s.batch} x {m.seq_len} x {m.vocab:,} = "
                        f"{mem.logits_values / 1e6:.0f} M values; with the loss's\n"
                        f"        fp32 copy and the gradient, about {mem.logits:.0f} GB"),
        "checkpointing": (f"inputs: 2 B x {m.seq_len} x {s.batch} x {m.hidden} = "
                          f"{mem.ckpt_input * 1e3:.0f} MB per layer\n"
                          f"x {m.layers} layers = {mem.ckpt_input * m.layers:.1f} GB, + one "
                          f"layer recomputed ({mem.act_layer:.2f} GB)\n"
                          f"            = about {mem.ckpt:.1f} GB"),
        "totals": _totals(mem),
        "host": ("θ_H, θ_S: 8 B/param each\n"
                 "θ_T: list + concatenation, 16 B/param at that moment\n"
                 f"full:  {n} x (8 + 8 + 8 + 16) B = {mem.host_full:.0f} GB at the peak\n"
                 f"LoRA:  {n} x (8 + 8 + 16) B     = {mem.host_lora:.0f} GB at the peak"),
    }


def _totals(mem: Memory) -> str:
    rows = [("LoRA:", [mem.frozen, mem.adapters, mem.act, mem.logits]),
            ("LoRA + checkpointing:", [mem.frozen, mem.adapters, mem.ckpt, mem.logits]),
            ("full, bf16 (caveat):", [mem.bf16, mem.act, mem.logits]),
            ("  + checkpointing:", [mem.bf16, mem.ckpt, mem.logits])]
    lines = [f"{label:<22} {' + '.join(f'{x:.1f}' for x in parts)} = about {sum(parts):.0f} GB"
             for label, parts in rows]
    lines.append(f"{'full, float32:':<22} {mem.fp32:.0f} GB before activations")
    return "\n".join(lines)


def time_blocks(m: Model, hw: Hardware, s: Schedule, t: Time) -> dict[str, str]:
    """Block name -> text, in the page's order."""
    n = _n(m.n_params)
    link, host = hw.link_gb_per_s, hw.host_gb_per_s
    return {
        "assumptions": (f"GPU: one H100 SXM, {hw.peak_flops / 1e12:.0f} TFLOP/s dense bf16 peak, "
                        f"{hw.hbm_bytes_per_s / 1e12:.2f} TB/s\n"
                        f"     training at {hw.utilisation:.0%} of the peak: "
                        f"{sci(hw.train_flops)} FLOP/s\n"
                        f"GPU to host: {link[0]:.0f} to {link[1]:.0f} GB/s\n"
                        f"host memory traffic: {host[0]:.0f} to {host[1]:.0f} GB/s "
                        "(one CPU thread)\n"
                        f"sequences of {m.seq_len} tokens; the hf preset's schedule"),
        "runs": (f"runs:  {s.seeds} unblocked + {s.check_runs} lambda check + {s.arms} arms x "
                 f"{s.seeds} seeds + {s.defense_runs} defenses = {s.main_runs} x {s.steps} steps\n"
                 f"     + {s.shock_runs} shock x {s.shock_steps} steps + {s.search_runs} search x "
                 f"{s.search_steps} steps = {s.runs} runs, {t.steps:,} steps\n"
                 f"tokens per step: {s.batch} x {m.seq_len} = {t.tokens:,}"),
        "training": (f"full: 6 x {n} x {t.tokens:,} = {sci(6 * m.n_params * t.tokens)} FLOP -> "
                     f"{t.full_step:.2f} s per step\n"
                     f"LoRA: 4 x {n} x {t.tokens:,} = {sci(4 * m.n_params * t.tokens)} FLOP -> "
                     f"{t.lora_step:.2f} s per step\n"
                     f"checkpointing: + 2 x {n} x {t.tokens:,}    -> + {t.ckpt_step:.2f} s "
                     "per step\n"
                     f"LoRA: {t.steps:,} x ({t.lora_step:.2f} to {t.full_step:.2f} s)      = "
                     f"{_mins(t.train)}"),
        "judging": (f"decoding steps: {s.judged} x {s.gen_batches} batches x {s.new_tokens} "
                    f"tokens = {t.decode_steps:,}\n"
                    f"at best {m.n_params * 2 / GB:.0f} GB / {hw.hbm_bytes_per_s / 1e12:.2f} "
                    f"TB/s = {t.decode_step * 1e3:.1f} ms each    -> {t.judge:.0f} s"),
        "view": (f"points: {s.logged} x {s.main_runs - s.defense_runs} + 2 x {s.defense_runs} "
                 f"defenses + {s.shock_logged} x {s.shock_runs} shock + {s.search_logged} x "
                 f"{s.search_runs} search = {t.view_points}\n"
                 f"LoRA: {t.flat:.0f} GB to the host ({t.view_copy[0]:.0f} to "
                 f"{t.view_copy[1]:.0f} s)\n"
                 f"      + its concatenation ({2 * t.flat:.0f} GB of traffic, "
                 f"{t.view_concat[0]:.0f} to {t.view_concat[1]:.0f} s)\n"
                 f"      {t.view_points} x ({t.view_lora[0]:.0f} to {t.view_lora[1]:.0f} s) = "
                 f"{_mins(tuple(t.view_points * x for x in t.view_lora))}\n"
                 "full: + two differences, two norms, a dot product:\n"
                 f"      about {t.full_traffic / 1e3:.2f} TB of traffic per point\n"
                 f"      {t.view_points} x ({t.view_full[0]:.0f} to {t.view_full[1]:.0f} s) = "
                 f"{t.view_points * t.view_full[0] / 3600:.1f} to "
                 f"{t.view_points * t.view_full[1] / 3600:.1f} hours"),
    }
