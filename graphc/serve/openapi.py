"""An OpenAPI 3 description of the server, written from the manifest: each input's JSON form
is an array nested to its rank, with number or integer leaves."""

from __future__ import annotations

from typing import Any

from graphc.serve.manifest import Manifest, TensorSig

ERROR = {"$ref": "#/components/schemas/Error"}


def _nested(sig: TensorSig) -> dict[str, Any]:
    leaf: dict[str, Any] = {"type": "number" if sig.is_float else "boolean" if sig.dtype == "bool" else "integer"}
    if sig.range is not None and not sig.is_float:
        leaf |= {"minimum": sig.range[0], "exclusiveMaximum": sig.range[1]}
    schema = leaf
    for dim in reversed(sig.shape):
        schema = {"type": "array", "items": schema, **({"minItems": dim, "maxItems": dim} if isinstance(dim, int) else {})}
    schema["description"] = f"{sig.dtype} [{', '.join(map(str, sig.shape))}]"
    return schema


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def openapi(man: Manifest) -> dict[str, Any]:
    """The OpenAPI document for ``man``'s server."""
    errors = {str(c): {"description": d, "content": {"application/json": {"schema": ERROR}}}
              for c, d in ((400, "malformed body"), (408, "body too slow"), (413, "body too large"),
                           (422, "inputs do not match the model"), (503, "queue full (see Retry-After)"))}
    request = _obj({"inputs": _obj({n: _nested(s) for n, s in man.inputs.items()})})
    response = {"type": "object", "properties": {"model": {"type": "string"}, "batch": {"type": "integer"},
                                                 "outputs": _obj({n: _nested(s) for n, s in man.outputs.items()})}}
    json_ok = {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"graphc serve: {man.name}", "version": str(man.raw.get("versions", {}).get("graphc", "0"))},
        "paths": {
            "/v1/health": {"get": {"summary": "liveness", "responses": json_ok}},
            "/v1/model": {"get": {"summary": "the model's signature (from manifest.json)", "responses": json_ok}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
            "/v1/predict": {"post": {
                "summary": "run the model; send application/x-npz (numpy.savez) for the binary form",
                "requestBody": {"required": True, "content": {"application/json": {"schema": request},
                                                              "application/x-npz": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": {"description": "outputs", "content": {"application/json": {"schema": response},
                                                                            "application/x-npz": {"schema": {"type": "string", "format": "binary"}}}},
                              **errors},
            }},
        },
        "components": {"schemas": {"Error": _obj({"error": _obj({"status": {"type": "integer"}, "input": {"type": "string", "nullable": True},
                                                                  "problem": {"type": "string"}, "message": {"type": "string"}})})}},
    }
