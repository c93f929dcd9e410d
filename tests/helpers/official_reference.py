"""An independent functional forward of the official Vim / ShuffleMamba model, written
from the published description, operating directly on an official-layout state dict."""
import math

import torch
import torch.nn.functional as F

from mmplugin_shufflemamba.ops import selective_scan_ref


def make_official_state_dict(depth=3, dim=32, grid=4, patch=16, fmt='shufflemamba',
                             registers=3, rms_norm=False, seed=0, num_classes=10):
    """Random weights in the official key layout (head included)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    d_inner, d_state, dt_rank = 2 * dim, 16, math.ceil(dim / 16)
    n = grid * grid
    sd = {'patch_embed.proj.weight': r(dim, 3, patch, patch, scale=0.05),
          'patch_embed.proj.bias': r(dim)}
    if fmt == 'reg':
        sd['cls_token'] = r(1, registers, dim)
        sd['pos_embed_cls'] = r(1, registers, dim)
        sd['pos_embed'] = r(1, n, dim)
        sd['neck.weight'] = r(dim // 4, dim)
        sd['norm_neck.weight'] = 1 + r(registers * dim // 4)
        sd['head.weight'] = r(num_classes, registers * dim // 4)
    else:
        sd['cls_token'] = r(1, 1, dim)
        sd['pos_embed'] = r(1, n + 1, dim)
        sd['head.weight'] = r(num_classes, dim)
    sd['head.bias'] = r(num_classes)
    for i in range(depth):
        p = f'layers.{i}.'
        sd[p + 'norm.weight'] = 1 + r(dim)
        if not rms_norm:
            sd[p + 'norm.bias'] = r(dim)
        m = p + 'mixer.'
        sd[m + 'in_proj.weight'] = r(2 * d_inner, dim)
        sd[m + 'out_proj.weight'] = r(dim, d_inner)
        for s in ('', '_b'):
            sd[m + f'conv1d{s}.weight'] = r(d_inner, 1, 4, scale=0.5)
            sd[m + f'conv1d{s}.bias'] = r(d_inner)
            sd[m + f'x_proj{s}.weight'] = r(dt_rank + 2 * d_state, d_inner)
            sd[m + f'dt_proj{s}.weight'] = r(d_inner, dt_rank)
            sd[m + f'dt_proj{s}.bias'] = r(d_inner) - 3.0
            sd[m + ('A_log' if s == '' else 'A_b_log')] = torch.log(
                torch.arange(1, d_state + 1).float()).repeat(d_inner, 1) + r(d_inner, d_state)
            sd[m + f'D{s}'] = 1 + r(d_inner)
    sd['norm_f.weight'] = 1 + r(dim)
    if not rms_norm:
        sd['norm_f.bias'] = r(dim)
    return sd


def _norm(sd, prefix, x, eps=1e-5):
    w = sd[prefix + '.weight']
    b = sd.get(prefix + '.bias')
    if b is None:  # RMSNorm
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    return F.layer_norm(x, (x.shape[-1], ), w, b, eps)


def _mixer(sd, p, x):
    d_inner = sd[p + 'D'].shape[0]
    d_state = sd[p + 'A_log'].shape[1]
    dt_rank = sd[p + 'dt_proj.weight'].shape[1]
    xz = x @ sd[p + 'in_proj.weight'].t()
    xs, z = xz[..., :d_inner], xz[..., d_inner:]
    ys = []
    for s, flip in (('', False), ('_b', True)):
        xi, zi = (xs.flip(1), z.flip(1)) if flip else (xs, z)
        L = xi.shape[1]
        xc = F.conv1d(xi.transpose(1, 2), sd[p + f'conv1d{s}.weight'],
                      sd[p + f'conv1d{s}.bias'], padding=3, groups=d_inner)[..., :L]
        xc = F.silu(xc)
        dbl = xc.transpose(1, 2) @ sd[p + f'x_proj{s}.weight'].t()
        dt = dbl[..., :dt_rank]
        Bm = dbl[..., dt_rank:dt_rank + d_state]
        Cm = dbl[..., dt_rank + d_state:]
        delta = (dt @ sd[p + f'dt_proj{s}.weight'].t()).transpose(1, 2)
        A = -torch.exp(sd[p + ('A_log' if s == '' else 'A_b_log')])
        y = selective_scan_ref(xc, delta, A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                               sd[p + f'D{s}'], zi.transpose(1, 2),
                               sd[p + f'dt_proj{s}.bias'], delta_softplus=True)
        ys.append(y.flip(-1) if flip else y)
    return ((ys[0] + ys[1]) / 2).transpose(1, 2) @ sd[p + 'out_proj.weight'].t()


def official_features(sd, x, fmt, out_indices, keep_tokens=False, patch=16,
                      out_type='residual'):
    """Features of the official model (eval mode) for input x (B, 3, H, W)."""
    Bsz = x.shape[0]
    feat = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                    stride=patch)
    h, w = feat.shape[-2:]
    tokens = feat.flatten(2).transpose(1, 2)
    n = h * w
    pos = sd['pos_embed']
    if fmt == 'reg':
        patch_pos = pos
    else:
        cls_at = 0 if fmt == 'shufflemamba' else (pos.shape[1] - 1) // 2
        cls_pos = pos[:, cls_at:cls_at + 1]
        patch_pos = torch.cat([pos[:, :cls_at], pos[:, cls_at + 1:]], 1)
    src = int(math.isqrt(patch_pos.shape[1]))
    if (src, src) != (h, w):
        grid = patch_pos.reshape(1, src, src, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(grid, size=(h, w), mode='bicubic',
                                  align_corners=False).flatten(2).transpose(1, 2)
    tokens = tokens + patch_pos
    extra_positions = []
    if keep_tokens and fmt == 'reg':
        R = sd['cls_token'].shape[1]
        regs = (sd['cls_token'] + sd['pos_embed_cls']).expand(Bsz, -1, -1)
        seg = n // (R + 1)  # Mamba-Reg: S patches, register, S patches, register, ...
        pieces = []
        for r in range(R):
            pieces += [tokens[:, r * seg:(r + 1) * seg], regs[:, r:r + 1]]
            extra_positions.append(seg * (r + 1) + r)
        pieces.append(tokens[:, R * seg:])
        tokens = torch.cat(pieces, 1)
    elif keep_tokens and fmt == 'vim':
        mid = n // 2
        cls = (sd['cls_token'] + cls_pos).expand(Bsz, -1, -1)
        tokens = torch.cat([tokens[:, :mid], cls, tokens[:, mid:]], 1)
        extra_positions = [mid]
    keep = [i for i in range(tokens.shape[1]) if i not in extra_positions]
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('layers.'))
    residual, hidden, outs = None, tokens, []
    for i in range(depth):
        residual = hidden if residual is None else residual + hidden
        hidden = _mixer(sd, f'layers.{i}.mixer.', _norm(sd, f'layers.{i}.norm', residual))
        if i in out_indices:
            if i == depth - 1:
                o = _norm(sd, 'norm_f', residual + hidden)
            elif out_type == 'mixer':
                o = hidden
            else:
                o = residual + hidden
            o = o[:, keep]
            outs.append(o.reshape(Bsz, h, w, -1).permute(0, 3, 1, 2))
    return outs
