"""``mergechat compare MERGED | A B [C D]``: one prompt to a merge and its sources (or up to four
given models), each reply under its model's name with its stats, or one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from mergechat.cli.args import (
    GENERATION_FIELDS,
    _Parser,
    add_device_flags,
    add_generation_flags,
    add_trust_remote_code,
    generation_overrides,
)
from mergechat.cli.checks import require_terminal, text_argument
from mergechat.cli.output import warn
from mergechat.core.compare.clients import default_factory
from mergechat.core.compare.events import (
    CompareEvent,
    ComparePhase,
    ComparePlaced,
    CompareText,
    ModelResult,
)
from mergechat.core.compare.plan import MAX_MODELS, ComparePlan
from mergechat.core.errors import BadInputError, MergechatError
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import HistoryUnavailable
from mergechat.core.visible import escape_control

if TYPE_CHECKING:
    from mergechat.core.compare.runner import ClientFactory


def build_compare_parser() -> argparse.ArgumentParser:
    """The parser of ``mergechat compare MODEL [MODEL ...] [options]``."""
    parser = _Parser(
        prog="mergechat compare",
        description="Answer one prompt with a merge, its base model and each source (read from "
        "its mergekit_config.yml), or with up to four models given as folders, .gguf files or "
        "server URLs; replies are greedy unless --temperature says otherwise.",
    )
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="a merge folder alone (its recipe names the others), or 2 to 4 models; a Hugging "
        "Face id is looked up in the local cache only",
    )
    parser.add_argument(
        "--prompt",
        metavar="TEXT",
        type=text_argument,
        help="answer TEXT and exit (without it: the interactive compare view)",
    )
    parser.add_argument("--json", action="store_true", help="with --prompt: one JSON object")
    add_device_flags(
        parser,
        default_device="auto",
        dtype_help="one precision for every local model: float32, bfloat16 or float16 "
        "(default: see --no-same-precision)",
    )
    parser.add_argument(
        "--no-same-precision",
        dest="same_precision",
        action="store_false",
        help="each model in its own recommended precision (default: one precision every model "
        "runs well, for a fair greedy comparison)",
    )
    add_generation_flags(
        parser,
        fields=("max_new_tokens", "temperature", "seed"),
        title="generation (default: greedy, else each model's generation_config.json)",
    )
    add_trust_remote_code(parser)
    parser.add_argument("--no-history", action="store_true", help="do not save the comparison")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    # The models are checked by the plan, not as one PATH; generation flags not offered here
    # keep the model's defaults.
    parser.set_defaults(path=None, **dict.fromkeys(GENERATION_FIELDS))
    return parser


def compare_plan(models: list[str]) -> ComparePlan:
    """The plan for the MODEL arguments: one merge folder, or 2 to `MAX_MODELS` models."""
    from mergechat.core.compare.plan import explicit_plan, recipe_plan

    if len(models) > MAX_MODELS:
        raise BadInputError(f"compare takes at most {MAX_MODELS} models, got {len(models)}")
    return recipe_plan(models[0]) if len(models) == 1 else explicit_plan(models)


class _Printer:
    """Streams each model's reply under its name (not in JSON mode); placement notes to stderr."""

    def __init__(self, plan: ComparePlan, out: TextIO, err: TextIO, json_output: bool) -> None:
        self.plan, self.out, self.err, self.json_output = plan, out, err, json_output
        self.parallel = False
        self._open: int | None = None

    def __call__(self, event: CompareEvent) -> None:
        if isinstance(event, ComparePlaced):
            self.parallel = event.placement.parallel
            warn(event.placement.reason, self.err, level="note")
        elif self.json_output or self.parallel:
            return
        elif isinstance(event, ComparePhase) and event.phase == "answering":
            self._heading(event.index)
        elif isinstance(event, CompareText):
            self._heading(event.index)
            self.out.write(escape_control(event.delta, keep_lines=True))
            self.out.flush()

    def _heading(self, index: int) -> None:
        if self._open == index:
            return
        self.end()
        self.out.write(f"== {escape_control(self.plan.models[index].label)} ==\n")
        self._open = index

    def end(self) -> None:
        """Close the open reply with a blank line."""
        if self._open is not None:
            self.out.write("\n\n")
            self.out.flush()
        self._open = None

    def replies(self, results: tuple[ModelResult, ...]) -> None:
        """Print every reply at once (replies that ran together were not streamed)."""
        for result in results:
            self._heading(result.index)
            self.out.write(escape_control(result.reply, keep_lines=True))
        self.end()


def _summary(result: ModelResult) -> str:
    if result.error:
        return f"{result.model.label}: failed: {result.error}"
    parts = [result.model.label]
    if result.stats is not None:
        s = result.stats
        parts += [
            f"{s.device} {s.dtype}",
            f"{s.new_tokens} tokens",
            f"first token {s.ttft_s:.2f} s",
            f"{s.decode_tokens_per_s:.1f} tok/s",
        ]
    if result.agreement is not None:
        parts.append(f"agreement with the merge {result.agreement:.1%}")
    if result.divergence is not None:
        parts.append(result.divergence.describe())
    return " · ".join(parts)


def result_json(result: ModelResult) -> dict[str, object]:
    """One model's entry of the ``--json`` object."""
    stats = result.stats
    div = result.divergence
    return {
        "model": str(result.model.path),
        "name": result.model.name,
        "role": result.model.role,
        "device": stats.device if stats else (result.state.device if result.state else None),
        "dtype": stats.dtype if stats else (result.state.dtype if result.state else None),
        "reply": result.reply,
        "new_tokens": stats.new_tokens if stats else None,
        "ttft_s": round(stats.ttft_s, 4) if stats else None,
        "decode_tokens_per_s": round(stats.decode_tokens_per_s, 2) if stats else None,
        "total_s": round(stats.total_s, 4) if stats else None,
        "load_s": round(result.load_s, 3) if result.load_s is not None else None,
        "agreement_with_merge": round(result.agreement, 4)
        if result.agreement is not None
        else None,
        "agreement_note": result.agreement_note,
        "divergence_from_base": None
        if div is None
        else {"unit": div.unit, "index": div.index, "char_offset": div.char_offset},
        "finish": result.finish,
        "error": result.error,
        "notes": list(result.notes),
    }


def run_compare(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    factory: ClientFactory | None = None,
    record_history: bool | None = None,
) -> int:
    """Run ``mergechat compare``; return the exit code (1 when no model could answer)."""
    from mergechat.core.compare.runner import CompareRunner

    out, err = out or sys.stdout, err or sys.stderr
    if args.json and args.prompt is None:
        raise BadInputError("--json needs --prompt")
    plan = compare_plan(args.models)
    overrides = generation_overrides(args)
    overrides.setdefault("temperature", 0.0)  # greedy unless asked: replies can be compared
    settings = GenerationSettings(**overrides)  # type: ignore[arg-type]
    # None: the config's [history] enabled decides; --no-history: never.
    record = False if args.no_history else record_history
    if args.prompt is None:
        return run_view(args, plan, settings, factory=factory, record_history=record)
    printer = _Printer(plan, out, err, args.json)
    runner = CompareRunner(
        plan,
        factory or default_factory,
        same_precision=args.same_precision,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        on_event=printer,
    )
    try:
        runner.prepare()
        results = runner.ask(args.prompt, settings)
    except KeyboardInterrupt:
        runner.stop()
        return 130
    finally:
        runner.close()
    _save(args.prompt, settings, results, err, record)
    if args.json:
        data = {"prompt": args.prompt, "models": [result_json(r) for r in results]}
        if runner.placement is not None:
            data["placement"] = runner.placement.reason
        out.write(json.dumps(data, ensure_ascii=False) + "\n")
    else:
        if printer.parallel:
            printer.replies(results)
        printer.end()
        for result in results:
            out.write(escape_control(_summary(result)) + "\n")
            for note in result.notes:
                warn(f"{result.model.name}: {note}", err, level="note")
    out.flush()
    if all(r.error for r in results):
        raise MergechatError("no model could answer: " + "; ".join(str(r.error) for r in results))
    return 0


def run_view(
    args: argparse.Namespace,
    plan: ComparePlan,
    settings: GenerationSettings,
    *,
    factory: ClientFactory | None = None,
    record_history: bool | None = None,
) -> int:
    """Open the interactive compare view (Textual is imported only now)."""
    try:
        require_terminal()
    except BadInputError as error:
        raise BadInputError(
            error.message,
            "run it in a terminal, or answer one prompt: mergechat compare ... --prompt TEXT",
        ) from None
    from mergechat.ui.compare.app import run_compare_app
    from mergechat.ui.compare.options import CompareOptions

    options = CompareOptions(
        plan,
        settings,
        same_precision=args.same_precision,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        record_history=record_history,
        factory=factory,
    )
    return run_compare_app(options)


def _save(
    prompt: str,
    settings: GenerationSettings,
    results: tuple[ModelResult, ...],
    err: TextIO,
    record: bool | None,
) -> None:
    from mergechat.core.compare.history import record_comparison

    try:
        record_comparison(prompt, settings, results, enabled=record)
    except HistoryUnavailable as exc:
        warn(f"history is off: {exc.message}", err)
