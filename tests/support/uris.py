"""URIs every URI field of the CRDs refuses (path traversal) or still admits: shared by the admission tests of the
pydantic models (tests/test_api.py) and of the generated CRD patterns (tests/test_crds.py)."""

# Refused by every URI field: `.`/`..` (any all-dots) segments, empty segments, backslashes, control characters.
TRAVERSALS = [
    "pvc://data/../../etc/passwd",
    "pvc://data/..",
    "pvc://data/x/../../../etc",
    "pvc://data/./x.jsonl",
    "pvc://data/.../x",
    "pvc://data//etc/passwd",
    "pvc://data/..\\..\\etc",
    "pvc://data/x\x00.jsonl",
    "pvc://data/x.jsonl\n",
    "file:///models/../etc/passwd",
    "file:////etc/passwd",
    "hf://Qwen/..",
    "hf://Qwen/Qwen2.5-7B-Instruct@../../x",
    "modelscope://qwen/Qwen-7B@v1/./x",
]
# Still admitted: dots inside names, hidden files, a trailing slash, branch revisions with slashes, spaces.
SAFE_URIS = [
    "pvc://data/.hidden/a..b/x.jsonl",
    "pvc://data/..x/x...y",
    "pvc://data/medical dir/",
    "file:///models/qwen/",
    "hf://Qwen/Qwen2.5-7B-Instruct@refs/pr/1",
    "hf://Qwen/Qwen2.5-7B-Instruct@v1.0.4",
]

# OCI references (spec.output.uri): the distribution spec's repository path has no `.`/`..` or empty segments.
OCI_TRAVERSALS = [
    "oci://registry.example.com/adapters/../etc",
    "oci://registry.example.com/../adapters",
    "oci://registry.example.com/adapters//medical",
    "oci://registry.example.com/./adapters",
    "oci://registry.example.com/adapters/medical:..",
    "oci://registry.example.com/adapters\\medical",
    "oci://registry.example.com/adapters/medical\n",
    "oci://registry.example.com/Adapters/medical",  # repository paths are lowercase
]
OCI_SAFE = [
    "oci://127.0.0.1:5000/adapters/medical",
    "oci://ghcr.io/acme/adapters/medical:v1.2",
    "oci://registry.example.com/a_b/c-d.e:Run_7",
]
_DIGEST = "sha256:" + "0123456789abcdef" * 4
OCI_PINNED = [  # one version: what a ModelServer serves (with spec.adapterAgent)
    f"oci://127.0.0.1:5000/adapters/medical@{_DIGEST}",
    f"oci://ghcr.io/acme/adapters/medical:v1.2@{_DIGEST}",
]
OCI_PINNED_TRAVERSALS = [
    f"oci://registry.example.com/adapters/../etc@{_DIGEST}",
    f"oci://registry.example.com/adapters/medical@sha256:{'0' * 63}",
    f"oci://registry.example.com/adapters/medical@sha512:{'0' * 64}",
]
