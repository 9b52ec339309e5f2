"""The Loraplane operator (kopf): FineTuneJob and ModelServer controllers."""
