"""The ModelServer controller: a vLLM Deployment of one base model, and the adapters the router serves on it.

validation.py  what the CRD schema cannot express (pure)
resolve.py     spec.adapters[] -> concrete versions, public-name ownership (pure)
builders.py    the desired children: Deployment (fetch-model init container + vLLM), Service, PDB (pure)
route.py       the route to publish and the safe next step towards it (pure)
publish.py     one step per round to the router; how soon to look again while versions load
status.py      what a round observed -> conditions, served versions, per-replica state (pure)
reconcile.py   one round: resolve, apply, publish, write the status (the controller the runtime drives)
deletion.py    the route leaves the router before our finalizer
"""
