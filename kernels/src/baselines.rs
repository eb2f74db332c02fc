//! Third-party GEMMs (`gemm`, `matrixmultiply`) as baselines.
