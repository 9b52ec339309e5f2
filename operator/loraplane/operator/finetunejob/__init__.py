"""The FineTuneJob controller: one training run -> a batch/v1 Job -> a checksummed, evaluated adapter.

validation.py  what the CRD schema cannot express (pure)
builders.py    the desired children: ConfigMap, claim, Job, trainer identity, cleanup Job (pure)
status.py      children's state -> phase, conditions, progress, result (pure)
reconcile.py   one round: apply, observe, write the status (the controller the runtime drives)
deletion.py    retentionPolicy Delete: the adapter goes before our finalizer
"""
