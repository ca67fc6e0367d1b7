"""Schemas of the fields the manifests use, for what publishes no model or schema that
installs here: Envoy Gateway's API (as of v1.8, whose statusOnError the SecurityPolicy
needs) and Istio's MeshConfig (istiod-values.yaml). Written from those projects' API
definitions: at each level they list every field the project defines there (or, for
MeshConfig, the two set here), so that a misspelt one fails, with the enumerations and
formats of the values used. The Gateway API's ReferenceGrant is validated against the
schema the Gateway API publishes (tests/support/kubernetes.py), which allows unknown
fields: its entry here lists the field names, so that a misspelt one fails too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _object(required: Sequence[str] = (), **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _list(item: Any, **more: Any) -> dict[str, Any]:
    return {"type": "array", "items": item, **more}


ANY: dict[str, Any] = {}
TEXT = {"type": "string", "minLength": 1}
FLAG = {"type": "boolean"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
COUNT = {"type": "integer", "minimum": 1}
GATEWAY_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}
PROTO_DURATION = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?s$"}
METADATA = _object(["name", "namespace"], name=TEXT, namespace=TEXT, labels=ANY, annotations=ANY)
TARGET_REFS = _list(
    _object(["group", "kind", "name"], group=TEXT, kind=TEXT, name=TEXT, sectionName=TEXT),
    minItems=1,
)
BACKEND_REF = _object(
    ["kind", "name", "port"],
    group={"type": "string"},
    kind={"enum": ["Service", "ServiceImport", "Backend"]},
    name=TEXT,
    namespace=TEXT,
    port=PORT,
    weight={"type": "integer"},
    fallback=FLAG,
)
ACTIVE_HEALTH_CHECK = _object(
    ["type"],
    type={"enum": ["HTTP", "TCP", "GRPC"]},
    grpc=_object(service=TEXT),
    http=ANY,
    tcp=ANY,
    timeout=GATEWAY_DURATION,
    interval=GATEWAY_DURATION,
    initialJitter=GATEWAY_DURATION,
    unhealthyThreshold=COUNT,
    healthyThreshold=COUNT,
    overrides=ANY,
    healthCheckLog=ANY,
)
CLUSTER_SETTINGS = _object(
    loadBalancer=ANY,
    retry=ANY,
    proxyProtocol=ANY,
    tcpKeepalive=ANY,
    healthCheck=_object(active=ACTIVE_HEALTH_CHECK, passive=ANY, panicThreshold=ANY),
    circuitBreaker=ANY,
    timeout=ANY,
    connection=ANY,
    dns=ANY,
    http2=_object(
        initialStreamWindowSize=ANY,
        initialConnectionWindowSize=ANY,
        maxConcurrentStreams=COUNT,
        onInvalidMessage=ANY,
        connectionKeepalive=ANY,
    ),
)
STATUS_CODES = [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414]
STATUS_CODES += [415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503]
STATUS_CODES += [504, 505, 506, 507, 508, 510, 511]
EXT_AUTH = _object(
    grpc=_object(
        backendRef=BACKEND_REF,
        backendRefs=_list(BACKEND_REF, minItems=1, maxItems=16),
        backendSettings=CLUSTER_SETTINGS,
    ),
    http=ANY,
    headersToExtAuth=_list({"type": "string", "pattern": "^[a-z0-9-]+$"}, minItems=1),
    bodyToExtAuth=_object(["maxRequestBytes"], maxRequestBytes=COUNT),
    timeout=GATEWAY_DURATION,
    failOpen=FLAG,
    recomputeRoute=FLAG,
    includeRouteMetadata=FLAG,
    contextExtensions=ANY,
    statusOnError={"enum": STATUS_CODES},
)
SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): _object(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=TEXT,
        kind=TEXT,
        metadata=METADATA,
        spec=_object(
            targetRef=ANY,
            targetRefs=TARGET_REFS,
            targetSelectors=ANY,
            mergeType=ANY,
            apiKeyAuth=ANY,
            cors=ANY,
            basicAuth=ANY,
            jwt=ANY,
            oidc=ANY,
            extAuth=EXT_AUTH,
            authorization=ANY,
        ),
    ),
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"): _object(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=TEXT,
        kind=TEXT,
        metadata=METADATA,
        spec=_object(
            targetRef=ANY,
            targetRefs=TARGET_REFS,
            targetSelectors=ANY,
            tcpKeepalive=ANY,
            enableProxyProtocol=ANY,
            proxyProtocol=ANY,
            clientIPDetection=ANY,
            tls=ANY,
            path=_object(
                escapedSlashesAction={
                    "enum": [
                        "KeepUnchanged",
                        "RejectRequest",
                        "UnescapeAndRedirect",
                        "UnescapeAndForward",
                    ]
                },
                disableMergeSlashes=FLAG,
            ),
            headers=_object(
                enableEnvoyHeaders=FLAG,
                disableRateLimitHeaders=FLAG,
                xForwardedClientCert=ANY,
                withUnderscoresAction={"enum": ["Allow", "RejectRequest", "DropHeader"]},
                preserveXRequestID=FLAG,
                requestID=ANY,
                earlyRequestHeaders=ANY,
                lateResponseHeaders=ANY,
            ),
            timeout=ANY,
            connection=ANY,
            http1=ANY,
            http2=ANY,
            http3=ANY,
            grpc=ANY,
            healthCheck=ANY,
            scheme=ANY,
        ),
    ),
    # Only the field names: the Gateway API's published schema, which allows unknown fields,
    # checks the rest (tests/support/kubernetes.py).
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): _object(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion=TEXT,
        kind=TEXT,
        metadata=METADATA,
        spec=_object(
            ["from", "to"],
            **{
                "from": _list(
                    _object(
                        ["group", "kind", "namespace"],
                        group={"type": "string"},
                        kind=TEXT,
                        namespace=TEXT,
                    ),
                    minItems=1,
                ),
                "to": _list(
                    _object(["group", "kind"], group={"type": "string"}, kind=TEXT, name=TEXT),
                    minItems=1,
                ),
            },
        ),
    ),
}
ISTIOD_VALUES = _object(
    ["meshConfig"],
    meshConfig=_object(
        ["extensionProviders"],
        pathNormalization=_object(
            normalization={
                "enum": ["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]
            }
        ),
        extensionProviders=_list(
            _object(
                ["name", "envoyExtAuthzGrpc"],
                name=TEXT,
                envoyExtAuthzGrpc=_object(
                    ["service", "port"],
                    service=TEXT,
                    port=PORT,
                    timeout=PROTO_DURATION,
                    failOpen=FLAG,
                    clearRouteCache=FLAG,
                    statusOnError={"type": "string", "pattern": "^[1-5][0-9][0-9]$"},
                    includeRequestBodyInCheck=_object(
                        maxRequestBytes=COUNT, allowPartialMessage=FLAG, packAsBytes=FLAG
                    ),
                ),
            ),
            minItems=1,
        ),
    ),
)
