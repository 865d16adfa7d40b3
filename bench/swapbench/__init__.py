"""The model swap benchmark's parts (bench/model_swap.py): the artifact, the gateway, the load windows, the report."""
