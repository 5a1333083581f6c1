"""The WebAssembly sandbox: limits, modules, the ABI runner, built-in kernels, Python UDFs."""
