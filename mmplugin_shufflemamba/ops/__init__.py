from .causal_conv1d import (causal_conv1d, causal_conv1d_cpu, causal_conv1d_ref,
                            has_causal_conv1d_cuda)
from .selective_scan import (has_selective_scan_cpu, selective_scan, selective_scan_cpu,
                             selective_scan_torch)
from .selective_scan_cuda import has_selective_scan_cuda
from .selective_scan_ref import selective_scan_ref
from .ms_deform_attn import (has_ms_deform_attn_cpu, ms_deform_attn, ms_deform_attn_cpu,
                             ms_deform_attn_ref)
from .kernels import (KERNEL_BACKENDS, ShapeError, check_kernel_backend, cpu_paths,
                      get_cpu_path, set_cpu_path)

__all__ = [
    'causal_conv1d_cpu', 'selective_scan', 'selective_scan_ref', 'selective_scan_torch',
    'selective_scan_cpu', 'has_selective_scan_cpu', 'has_selective_scan_cuda',
    'causal_conv1d', 'causal_conv1d_ref', 'has_causal_conv1d_cuda', 'KERNEL_BACKENDS',
    'check_kernel_backend', 'ShapeError', 'cpu_paths', 'get_cpu_path', 'set_cpu_path',
    'ms_deform_attn', 'ms_deform_attn_cpu', 'ms_deform_attn_ref', 'has_ms_deform_attn_cpu'
]
