"""Chat prompts from Jinja2 templates, the JSON schema servers enforce, and parsers for both answer forms.

Prompts live in a config folder (``reports.prompts``: system.j2, user.j2, examples.yaml) so users tune wording
without touching code. Servers that support structured output get the schema in ``response_format``; others are
asked for plain ``FINDINGS: ... IMPRESSION: ...`` text, which ``parse_sections`` reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from synthvlp.errors import UserError

REPORT_SCHEMA = {
    "type": "object",
    "properties": {"findings": {"type": "string", "minLength": 1}, "impression": {"type": "string", "minLength": 1}},
    "required": ["findings", "impression"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "cxr_report", "schema": REPORT_SCHEMA, "strict": True}}
_SECTION = re.compile(r"(?is)\bFINDINGS\s*:\s*(?P<findings>.+?)\s*\bIMPRESSION\s*:\s*(?P<impression>.+)")


class MalformedAnswer(ValueError):
    """The model's answer holds no FINDINGS/IMPRESSION pair; the message quotes the start of it."""


@dataclass(frozen=True)
class PromptSet:
    """Loaded templates of one prompt folder."""

    folder: Path
    system: object
    user: object
    examples: list[dict]

    def messages(self, entities: list[dict], feedback: tuple[str, ...] = (), json_mode: bool = True, few_shot: int = 0) -> list[dict]:
        """System, few-shot pairs, then the request (with the last attempt's problems, if any)."""
        out = [{"role": "system", "content": self.system.render(json=json_mode).strip()}]
        for example in self.examples[:few_shot]:
            out.append({"role": "user", "content": self.user.render(entities=example["entities"], feedback=()).strip()})
            out.append({"role": "assistant", "content": format_answer(example["findings"], example["impression"], json_mode)})
        out.append({"role": "user", "content": self.user.render(entities=entities, feedback=feedback).strip()})
        return out


PACKAGED_PROMPTS = Path(__file__).parent / "prompt_templates"
"""The default prompts, shipped inside the package so a run works from any working directory."""


def load_prompts(folder: Path | None) -> PromptSet:
    """Read ``folder`` (None: the packaged prompts); errors name the missing or broken file."""
    import jinja2

    folder = Path(folder) if folder is not None else PACKAGED_PROMPTS
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    templates = {}
    for name in ("system.j2", "user.j2"):
        if not (folder / name).is_file():
            raise UserError(f"reports.prompts: {folder / name} not found; the folder needs system.j2 and user.j2 (see synthvlp/generation/prompt_templates)")
        try:
            templates[name] = env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise UserError(f"{folder / name}, line {exc.lineno}: {exc.message}") from None
    examples: list[dict] = []
    if (folder / "examples.yaml").is_file():
        examples = yaml.safe_load((folder / "examples.yaml").read_text(encoding="utf-8")) or []
        bad = [i for i, e in enumerate(examples) if not isinstance(e, dict) or not {"entities", "findings", "impression"} <= set(e)]
        if bad:
            raise UserError(f"{folder / 'examples.yaml'}: example {bad[0]} needs entities, findings and impression")
    return PromptSet(folder, templates["system.j2"], templates["user.j2"], examples)


def format_answer(findings: str, impression: str, json_mode: bool) -> str:
    if json_mode:
        return json.dumps({"findings": findings, "impression": impression})
    return f"FINDINGS: {findings}\nIMPRESSION: {impression}"


def parse_json(text: str) -> tuple[str, str]:
    """The schema's two fields; tolerates a ```json fence, nothing else."""
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedAnswer(f"not JSON ({exc.msg}): {text[:80]!r}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data[k].strip() for k in ("findings", "impression")):
        raise MalformedAnswer(f"JSON lacks non-empty findings/impression strings: {text[:80]!r}")
    return data["findings"].strip(), data["impression"].strip()


def parse_sections(text: str) -> tuple[str, str]:
    """FINDINGS and IMPRESSION from plain text (any case, optional markdown emphasis)."""
    match = _SECTION.search(text.replace("*", ""))
    if not match or not match["findings"].strip() or not match["impression"].strip():
        raise MalformedAnswer(f"no 'FINDINGS: ... IMPRESSION: ...' sections: {text[:80]!r}")
    return " ".join(match["findings"].split()), " ".join(match["impression"].split())
