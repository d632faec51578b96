// Thin adapter over the CBLAS that the build chose, so that cosine.cpp names one set of functions.
//
// scipy-openblas32 (the default, from PyPI) exports every symbol with a `scipy_` prefix so that it can live
// in the same process as numpy's own OpenBLAS; its cblas.h already declares the prefixed names. A system
// BLAS (OpenBLAS, MKL, BLIS... through CMake's FindBLAS) exports the plain `cblas_*` names.
#pragma once

#if defined(METRIC_BINDINGS_SCIPY_OPENBLAS)
#include <cblas.h>
#define MB_CBLAS(name) scipy_cblas_##name
#else
#include METRIC_BINDINGS_CBLAS_HEADER
#define MB_CBLAS(name) cblas_##name
#endif
