"""JSON schemas for the custom resources deploy/k8s renders, written by hand from the CRDs' documented
fields: no registry package ships the CloudNativePG, Prometheus Operator or cert-manager CRD schemas for
offline use.

They are subsets, strict where it matters (unknown fields refused, enums and duration patterns as the
CRDs have them), so a typo in a field name or a value the operator would reject fails the tests. What
they leave unchecked is open on purpose (`object` without properties): nested Kubernetes types the
manifests don't use. The kinds listed here are every CRD kind the manifests may use; any other
non-core kind fails the render test until a schema is added here.
"""

from __future__ import annotations

from typing import Any

# Prometheus Operator's duration format (monitoring.coreos.com CRDs).
_PROM_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}

_LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"}},
}

_RESOURCES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}},
        "limits": {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}},
        "claims": {"type": "array"},
    },
}

_SERVICE_MONITOR_ENDPOINT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object"},
        "interval": {"type": "string", "pattern": _PROM_DURATION},
        "scrapeTimeout": {"type": "string", "pattern": _PROM_DURATION},
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "followRedirects": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "relabelings": {"type": "array", "items": {"type": "object"}},
        "metricRelabelings": {"type": "array", "items": {"type": "object"}},
        "tlsConfig": {"type": "object"},
        "authorization": {"type": "object"},
        "basicAuth": {"type": "object"},
        "oauth2": {"type": "object"},
        "bearerTokenSecret": {"type": "object"},
        "proxyUrl": {"type": "string"},
        "noProxy": {"type": "string"},
        "proxyFromEnvironment": {"type": "boolean"},
    },
}

SERVICE_MONITOR: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "endpoints": {"type": "array", "items": _SERVICE_MONITOR_ENDPOINT},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "scrapeClass": {"type": "string"},
                "attachMetadata": {"type": "object"},
            },
        },
    },
}

CNPG_CLUSTER: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "postgresql.cnpg.io/v1"},
        "kind": {"const": "Cluster"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["instances"],
            "properties": {
                "instances": {"type": "integer", "minimum": 1},
                "imageName": {"type": "string", "minLength": 1},
                "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
                "description": {"type": "string"},
                "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                "primaryUpdateMethod": {"enum": ["switchover", "restart"]},
                "enablePDB": {"type": "boolean"},
                "enableSuperuserAccess": {"type": "boolean"},
                "minSyncReplicas": {"type": "integer", "minimum": 0},
                "maxSyncReplicas": {"type": "integer", "minimum": 0},
                "startDelay": {"type": "integer"},
                "stopDelay": {"type": "integer"},
                "smartShutdownTimeout": {"type": "integer"},
                "switchoverDelay": {"type": "integer"},
                "logLevel": {"enum": ["error", "warning", "info", "debug", "trace"]},
                "priorityClassName": {"type": "string"},
                "postgresql": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        # Every GUC value is a string in the CRD ("200", not 200).
                        "parameters": _STRING_MAP,
                        "pg_hba": {"type": "array", "items": {"type": "string"}},
                        "pg_ident": {"type": "array", "items": {"type": "string"}},
                        "shared_preload_libraries": {"type": "array", "items": {"type": "string"}},
                        "synchronous": {"type": "object"},
                        "syncReplicaElectionConstraint": {"type": "object"},
                        "ldap": {"type": "object"},
                        "promotionTimeout": {"type": "integer"},
                        "enableAlterSystem": {"type": "boolean"},
                    },
                },
                "bootstrap": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "initdb": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "database": {"type": "string"},
                                "owner": {"type": "string"},
                                "secret": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                },
                                "encoding": {"type": "string"},
                                "localeCollate": {"type": "string"},
                                "localeCType": {"type": "string"},
                                "dataChecksums": {"type": "boolean"},
                                "walSegmentSize": {"type": "integer"},
                                "options": {"type": "array", "items": {"type": "string"}},
                                "postInitSQL": {"type": "array", "items": {"type": "string"}},
                                "postInitApplicationSQL": {"type": "array", "items": {"type": "string"}},
                                "postInitTemplateSQL": {"type": "array", "items": {"type": "string"}},
                                "postInitSQLRefs": {"type": "object"},
                                "postInitApplicationSQLRefs": {"type": "object"},
                                "postInitTemplateSQLRefs": {"type": "object"},
                                "import": {"type": "object"},
                            },
                        },
                        "recovery": {"type": "object"},
                        "pg_basebackup": {"type": "object"},
                    },
                },
                "storage": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "size": {"type": "string"},
                        "storageClass": {"type": "string"},
                        "resizeInUseVolumes": {"type": "boolean"},
                        "pvcTemplate": {"type": "object"},
                    },
                },
                "walStorage": {"type": "object"},
                "resources": _RESOURCES,
                "affinity": {"type": "object"},
                "topologySpreadConstraints": {"type": "array"},
                "monitoring": {"type": "object"},
                "backup": {"type": "object"},
                "managed": {"type": "object"},
                "superuserSecret": {"type": "object"},
                "inheritedMetadata": {"type": "object"},
                "env": {"type": "array"},
                "certificates": {"type": "object"},
            },
        },
    },
}

_GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"

_ISSUER_REF: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": {"type": "string"},
    },
}

_KEY_USAGES = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
]

CERT_MANAGER_CERTIFICATE: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "issuerRef": _ISSUER_REF,
                "commonName": {"type": "string"},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
                "uris": {"type": "array", "items": {"type": "string"}},
                "isCA": {"type": "boolean"},
                "duration": {"type": "string", "pattern": _GO_DURATION},
                "renewBefore": {"type": "string", "pattern": _GO_DURATION},
                "usages": {"type": "array", "items": {"enum": _KEY_USAGES}},
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "subject": {"type": "object"},
                "secretTemplate": {"type": "object"},
                "keystores": {"type": "object"},
                "revisionHistoryLimit": {"type": "integer"},
            },
        },
    },
}

CERT_MANAGER_ISSUER: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Issuer"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"crlDistributionPoints": {"type": "array"}},
                },
                "ca": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["secretName"],
                    "properties": {
                        "secretName": {"type": "string", "minLength": 1},
                        "crlDistributionPoints": {"type": "array"},
                        "ocspServers": {"type": "array"},
                    },
                },
                "acme": {"type": "object"},
                "vault": {"type": "object"},
                "venafi": {"type": "object"},
            },
        },
    },
}

# (apiVersion, kind) -> schema, for every custom resource the manifests may render.
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("postgresql.cnpg.io/v1", "Cluster"): CNPG_CLUSTER,
    ("cert-manager.io/v1", "Certificate"): CERT_MANAGER_CERTIFICATE,
    ("cert-manager.io/v1", "Issuer"): CERT_MANAGER_ISSUER,
}
