"""The OpenAPI document the scoring service publishes at ``/docs.json``: valid OpenAPI 3.0.

BentoML generates a document that declares OpenAPI 3.0.2 but carries pydantic's JSON Schema
2020-12 (``exclusiveMinimum: 0``, ``type: 'null'``), flattens ``Optional`` fields to their
non-null type (so a null it returns breaks its own schema), drops cross-field rules and
declares every error body as ``{"error": str, "detail": str}`` while a 400 carries a list.
Here the infrastructure paths are kept from BentoML's document; each API operation gets its
request and response schemas from the pydantic models themselves, converted to 3.0, and the
error responses the service really sends (``models_bento.errors``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from models_bento.errors import ErrorResponse, ValidationErrorResponse

OPENAPI_VERSION = "3.0.3"
REF = "#/components/schemas/{model}"
_NULL = {"type": "null"}


def to_openapi30(node: Any) -> Any:
    """JSON Schema 2020-12 as pydantic writes it to the OpenAPI 3.0 schema dialect."""
    if isinstance(node, list):
        return [to_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: value if key == "example" else to_openapi30(value) for key, value in node.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[bound], node[exclusive] = value, True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    branches = node.get("anyOf")
    if isinstance(branches, list) and _NULL in branches:
        rest = [branch for branch in branches if branch != _NULL]
        del node["anyOf"]
        node["nullable"] = True
        if len(rest) > 1:
            node["anyOf"] = rest
        elif rest and "$ref" in rest[0]:
            node["allOf"] = rest  # 3.0 ignores siblings of a $ref
        elif rest:
            node = {**rest[0], **node}
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]  # 3.0: an enum lists null to allow it
    return node


def _component(model: type[BaseModel], name: str, components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=REF)
    for def_name, definition in schema.pop("$defs", {}).items():
        components[def_name] = to_openapi30(definition)
    schema["title"] = name
    components[name] = to_openapi30(schema)
    return {"$ref": REF.format(model=name)}


def _json(description: str, schema: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def published_spec(service: Any) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``service`` (a ``@bentoml.service`` class)."""
    spec = service.openapi_spec.asdict()
    spec["openapi"] = OPENAPI_VERSION
    components: dict[str, Any] = {}
    error = _component(ErrorResponse, "ErrorResponse", components)
    invalid = _component(ValidationErrorResponse, "ValidationErrorResponse", components)
    for name, method in service.apis.items():
        operation = spec["paths"][method.route]["post"]
        inputs, outputs = method.input_spec, method.output_spec
        input_name = f"{name}_input" if inputs.__name__ == "Input" else inputs.__name__
        output_name = outputs.__name__.removesuffix("IODescriptor")
        required = any(field.is_required() for field in inputs.model_fields.values())
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": _component(inputs, input_name, components)}},
        }
        operation["responses"] = {
            "200": _json("Successful Response", _component(outputs, output_name, components)),
            "400": _json("Invalid JSON, or a request that breaks the schema or contract", invalid),
            "413": _json("Request body larger than the contract's payload limit", error),
            "415": _json("Request body not application/json", error),
            "500": _json("Internal Server Error", error),
            "503": _json("Over capacity: retry after the Retry-After header's seconds", error),
        }
    spec["components"] = {"schemas": components}
    return spec
