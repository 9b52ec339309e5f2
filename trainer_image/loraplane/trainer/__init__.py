"""The training program of the trainer image (training spec JSON in, PEFT adapter + result.json out)."""
