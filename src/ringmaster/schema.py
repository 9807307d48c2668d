"""`ringmaster schema`: a JSON Schema of the whole config, step types included, for editors
(VS Code's YAML extension: `# yaml-language-server: $schema=ringmaster.schema.json`)."""

from __future__ import annotations

from typing import Any

from ringmaster.config import Config
from ringmaster.flows.nodes import NODE_TYPES


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    bare = []
    variants: list[dict[str, Any]] = []
    for kind, cls in sorted(NODE_TYPES.items()):
        s = cls.Options.model_json_schema(ref_template="#/$defs/{model}")
        for name, d in s.pop("$defs", {}).items():
            defs.setdefault(name, d)
        opt_name = f"step_{kind}"
        defs[opt_name] = s
        value: dict[str, Any] = {"$ref": f"#/$defs/{opt_name}"}
        alternatives = [value]
        if cls.shorthand and cls.shorthand in s.get("properties", {}):
            alternatives.append(s["properties"][cls.shorthand])
        if not s.get("required"):
            alternatives.append({"type": "null"})
            bare.append(kind)
        variants.append({
            "type": "object",
            "description": (cls.__doc__ or kind).strip().splitlines()[0],
            "properties": {kind: {"anyOf": alternatives} if len(alternatives) > 1 else value,
                           "id": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$"}},
            "required": [kind],
            "additionalProperties": False,
        })
    step = {"anyOf": [{"type": "string", "enum": bare}, *variants]}
    defs["step"] = step
    schema["properties"]["flows"] = {
        "type": "object", "description": "flow name -> list of steps",
        "additionalProperties": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}}}
    case = defs.get("Case", {}).get("properties", {})
    for key in ("exact", "prefix"):  # caller IDs that YAML reads as numbers are accepted
        if key in case:
            case[key] = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    if "in" in case:
        case["in"] = {"anyOf": [{"type": "array", "items": {"type": ["string", "integer"]}}, {"type": "null"}]}
    if "Member" in defs:  # `members: [alice, bob]` is short for [{agent: alice}, ...]
        defs["Member"] = {"anyOf": [{"type": "string"}, defs["Member"]]}
    if "TargetSpec" in defs:  # `1: sales` is short for {goto: sales}
        defs["TargetSpec"] = {"anyOf": [{"type": "string"}, defs["TargetSpec"]]}
    _loosen(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Ringmaster configuration and dial plan"
    return schema


def _loosen(node: Any) -> None:
    """Lists of strings also accept one string (`play: welcome` = `play: [welcome]`), as the
    models' before-validators do."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if isinstance(value, dict) and value.get("type") == "array" and value.get("items") == {"type": "string"}:
                node[key] = {"anyOf": [{"type": "string"}, value], **{k: v for k, v in value.items()
                                                                     if k in ("description", "title", "default")}}
                continue
            _loosen(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, dict) and value.get("type") == "array" and value.get("items") == {"type": "string"}:
                node[i] = {"anyOf": [{"type": "string"}, value]}
            else:
                _loosen(value)
