"""Benchmarks on one harness (`benchmarks.harness`): ``python -m benchmarks.<name> --help``. Nothing in
`lora_nb` imports them."""
