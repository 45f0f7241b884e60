"""graphc's block library (``include: [graphc:NAME]``, files in graphc/blocks/): each block
against its torch counterpart with the weights mapped across, how names are resolved (from
the shipped list only), where mistakes inside a library block are reported, its docs table,
and one library-using spec exported to ONNX and verified in onnxruntime.

torchvision's own modules need its C ops, which do not load against this torch, so the
ResNet, inverted-residual, FiLM and conv-BN-activation references are written here from
torch.nn primitives, following torchvision's (and the FiLM paper's) definitions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

import graphc
from graphc.errors import GraphcError, SpecError
from graphc.spec import library

Rename = Callable[[str, torch.Tensor], dict[str, torch.Tensor]]
BLOCKS = ROOT / "graphc" / "blocks"


def _build(tmp_path: Path, include: str, inputs: str, body: str) -> nn.Module:
    """A spec that includes ``include`` and whose node ``out`` is the model's output, built
    in float64 (so the comparison with torch shows real differences only)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"graphc: 1\nname: lib_test\ninclude: [{include}]\ninputs:\n{inputs}nodes:\n{body}outputs: [out]\n")
    return graphc.build(str(spec), seed=0).double().eval()


def _load(gm: nn.Module, ref: nn.Module, rename: Rename) -> None:
    """Copy the reference's tensors into ``gm``; every graphc tensor is filled exactly once."""
    mine = gm.state_dict()
    filled: dict[str, torch.Tensor] = {}
    for name, value in ref.state_dict().items():
        for new, tensor in rename(name, value).items():
            assert new in mine, f"{name} -> {new}: not in the graphc module"
            assert new not in filled and mine[new].shape == tensor.shape, new
            filled[new] = tensor
    assert set(filled) == set(mine), sorted(set(mine) ^ set(filled))
    gm.load_state_dict(filled)


def _randomize(module: nn.Module) -> None:
    """Random weights everywhere (LayerNorm and BatchNorm affine too) and non-trivial batch-norm
    statistics, so no part of a block can be wrong unnoticed."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    err = (a - b).abs().max().item()
    assert a.shape == b.shape and err < 1e-6, f"max abs difference {err:.3g}"


# --- transformer layers vs torch.nn ------------------------------------------------------------

D, HEADS, FF = 16, 4, 24


def _attn_rename(prefix: str, d: int) -> Rename:
    """torch's nn.TransformerEncoderLayer / DecoderLayer names -> the library's."""

    def rename(name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        m = re.fullmatch(r"(?:layers\.(\d+)\.)?(\w+)\.(.*)", name)
        assert m is not None
        copy, module, rest = m.groups()
        head = f"{prefix}.{copy}." if copy is not None else f"{prefix}."
        if module == "self_attn" and rest.startswith("in_proj_"):
            return {f"{head}self_attn.qkv.{rest.removeprefix('in_proj_')}": value}
        if module == "multihead_attn" and rest.startswith("in_proj_"):  # rows [q; k; v]: q, then fused kv
            part = rest.removeprefix("in_proj_")
            return {f"{head}multihead_attn.q.{part}": value[:d], f"{head}multihead_attn.kv.{part}": value[d:]}
        return {f"{head}{module}.{rest.replace('out_proj.', 'proj.')}": value}

    return rename


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize(("activation", "causal", "layers"), [("relu", False, None), ("gelu", True, None), ("relu", True, 2)],
                         ids=["relu", "gelu_causal", "two_layers_causal"])
def test_transformer_encoder_equals_torch(norm_first: bool, activation: str, causal: bool, layers: int | None, tmp_path: Path) -> None:
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first)
    ref = (nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else layer).double().eval()
    _randomize(ref)
    repeat = f", repeat: {layers}" if layers else ""
    gm = _build(tmp_path, "graphc:transformer", "  x: {shape: [B, T, 16], example: {B: 2, T: 5}}\n",
                f"  out: {{block: transformer_encoder, in: x, d: {D}, heads: {HEADS}, ff: {FF}, dropout: 0.0,"
                f" norm_first: {str(norm_first).lower()}, activation: {activation}, causal: {str(causal).lower()}{repeat}}}\n")
    _load(gm, ref, _attn_rename("out", D))
    x = torch.randn(3, 7, D, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64) if causal else None
    with torch.no_grad():
        want = ref(x, mask=mask, is_causal=causal) if layers else ref(x, src_mask=mask, is_causal=causal)
        _same(gm(x), want)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize(("causal", "layers"), [(False, None), (True, None), (True, 2)], ids=["plain", "causal", "two_layers_causal"])
def test_transformer_decoder_equals_torch(norm_first: bool, causal: bool, layers: int | None, tmp_path: Path) -> None:
    layer = nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    ref = (nn.TransformerDecoder(layer, layers) if layers else layer).double().eval()
    _randomize(ref)
    repeat = f", repeat: {layers}" if layers else ""
    gm = _build(tmp_path, "graphc:transformer", "  x: {shape: [B, T, 16], example: {B: 2, T: 5}}\n  memory: {shape: [B, S, 16], example: {S: 6}}\n",
                f"  out: {{block: transformer_decoder, in: [x, memory], d: {D}, heads: {HEADS}, ff: {FF}, dropout: 0.0,"
                f" norm_first: {str(norm_first).lower()}, causal: {str(causal).lower()}{repeat}}}\n")
    _load(gm, ref, _attn_rename("out", D))
    x, memory = torch.randn(3, 7, D, dtype=torch.float64), torch.randn(3, 4, D, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64) if causal else None
    with torch.no_grad():
        _same(gm(x, memory), ref(x, memory, tgt_mask=mask, tgt_is_causal=causal))


def _padding(lengths: list[int], total: int) -> torch.Tensor:
    """bool [B, total], True past each row's length (torch's key_padding_mask convention)."""
    return torch.arange(total)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_padded_encoder_equals_torch_with_src_key_padding_mask(norm_first: bool, tmp_path: Path) -> None:
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    ref = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).double().eval()
    _randomize(ref)
    gm = _build(tmp_path, "graphc:transformer", "  x: {shape: [B, T, 16], example: {B: 2, T: 5}}\n  pad: {shape: [B, T], dtype: bool}\n",
                f"  out: {{block: transformer_encoder_padded, in: [x, pad], d: {D}, heads: {HEADS}, ff: {FF}, dropout: 0.0,"
                f" norm_first: {str(norm_first).lower()}, repeat: 2}}\n")
    _load(gm, ref, _attn_rename("out", D))
    x, pad = torch.randn(3, 7, D, dtype=torch.float64), _padding([7, 4, 1], 7)
    with torch.no_grad():
        _same(gm(x, pad), ref(x, src_key_padding_mask=pad))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_padded_decoder_equals_torch_with_memory_key_padding_mask(norm_first: bool, tmp_path: Path) -> None:
    layer = nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    ref = nn.TransformerDecoder(layer, 2).double().eval()
    _randomize(ref)
    gm = _build(tmp_path, "graphc:transformer",
                "  x: {shape: [B, T, 16], example: {B: 2, T: 5}}\n  memory: {shape: [B, S, 16], example: {S: 6}}\n"
                "  memory_pad: {shape: [B, S], dtype: bool}\n",
                f"  out: {{block: transformer_decoder_padded, in: [x, memory, memory_pad], d: {D}, heads: {HEADS}, ff: {FF}, dropout: 0.0,"
                f" norm_first: {str(norm_first).lower()}, causal: true, repeat: 2}}\n")
    _load(gm, ref, _attn_rename("out", D))
    x, memory, pad = torch.randn(3, 7, D, dtype=torch.float64), torch.randn(3, 5, D, dtype=torch.float64), _padding([5, 2, 1], 5)
    mask = nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64)
    with torch.no_grad():
        _same(gm(x, memory, pad), ref(x, memory, tgt_mask=mask, tgt_is_causal=True, memory_key_padding_mask=pad))


# --- ResNet blocks (torchvision.models.resnet's BasicBlock and Bottleneck) ----------------------


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (stride on the 3x3 conv, ResNet v1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


def _make_layer(block: type[BasicBlock | Bottleneck], inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """torchvision's ResNet._make_layer: the first block strides and projects when it must."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False), nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _resnet_rename(name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """``1.conv1.weight`` -> ``out.1.conv1.weight``; torchvision's downsample.0/1 -> down_conv/down_bn."""
    name = name.replace("downsample.0.", "down_conv.").replace("downsample.1.", "down_bn.")
    return {f"out.{name}": value}


@pytest.mark.parametrize(("block", "cin", "planes", "stride", "copies"), [
    ("resnet_basic", 8, 8, 1, 2), ("resnet_basic", 8, 16, 2, 2), ("resnet_bottleneck", 8, 4, 1, 2), ("resnet_bottleneck", 16, 8, 2, 3),
])
def test_resnet_blocks_equal_torchvision_layout(block: str, cin: int, planes: int, stride: int, copies: int, tmp_path: Path) -> None:
    kind = BasicBlock if block == "resnet_basic" else Bottleneck
    ref = _make_layer(kind, cin, planes, copies, stride).double().eval()
    _randomize(ref)
    project = stride != 1 or cin != planes * kind.expansion
    gm = _build(tmp_path, "graphc:resnet", f"  x: {{shape: [B, {cin}, H, W], example: {{B: 2, H: 12, W: 12}}}}\n",
                f"  out: {{block: {block}, in: x, c: {planes}, stride: {stride}, project: {str(project).lower()}, repeat: {copies}}}\n")
    _load(gm, ref, _resnet_rename)
    x = torch.randn(2, cin, 12, 10, dtype=torch.float64)
    with torch.no_grad():
        _same(gm(x), ref(x))


# --- inverted residual (torchvision.models.mobilenetv2.InvertedResidual) -----------------------


def _conv_norm_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU,
                   dilation: int = 1) -> nn.Sequential:
    """torchvision.ops.Conv2dNormActivation: conv (no bias), BatchNorm2d, activation."""
    padding = (kernel - 1) // 2 * dilation
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


class InvertedResidual(nn.Module):
    """torchvision.models.mobilenetv2.InvertedResidual."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_norm_act(inp, hidden, kernel=1, act=nn.ReLU6))
        layers += [_conv_norm_act(hidden, hidden, stride=stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _mobilenet_rename(t: int) -> Rename:
    """torchvision's ``conv.N`` indices -> the library's expand / dw / project / project_bn."""
    parts = ["expand", "dw", "project", "project_bn"] if t != 1 else ["dw", "project", "project_bn"]
    sub = {"0": "conv", "1": "bn"}

    def rename(name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
        m = re.fullmatch(r"(\d+)\.conv\.(\d+)\.(?:(\d)\.)?(.*)", name)
        assert m is not None, name
        copy, idx, inner, rest = m.groups()
        part = parts[int(idx)]
        return {f"out.{copy}.{part}.{sub[inner] + '.' if inner else ''}{rest}": value}

    return rename


@pytest.mark.parametrize(("cin", "c", "stride", "t", "copies"), [(8, 8, 1, 6, 2), (8, 16, 2, 6, 3), (8, 8, 1, 1, 1), (8, 12, 1, 1, 2)])
def test_inverted_residual_equals_torchvision_layout(cin: int, c: int, stride: int, t: int, copies: int, tmp_path: Path) -> None:
    ref = nn.Sequential(*[InvertedResidual(cin if i == 0 else c, c, stride if i == 0 else 1, t) for i in range(copies)]).double().eval()
    _randomize(ref)
    gm = _build(tmp_path, "graphc:mobilenet", f"  x: {{shape: [B, {cin}, H, W], example: {{B: 2, H: 12, W: 12}}}}\n",
                f"  out: {{block: inverted_residual, in: x, c: {c}, stride: {stride}, t: {t}, repeat: {copies}}}\n")
    _load(gm, ref, _mobilenet_rename(t))
    x = torch.randn(2, cin, 12, 10, dtype=torch.float64)
    with torch.no_grad():
        _same(gm(x), ref(x))


# --- conv-BN-activation (torchvision.ops.Conv2dNormActivation) --------------------------------


@pytest.mark.parametrize(("args", "kernel", "stride", "groups", "dilation", "act"), [
    ("", 3, 1, 1, 1, nn.ReLU),
    (", stride: 2, act: relu6", 3, 2, 1, 1, nn.ReLU6),
    (", kernel: 3, groups: 8, act: silu", 3, 1, 8, 1, nn.SiLU),
    (", kernel: 5, dilation: 2, act: gelu", 5, 1, 1, 2, nn.GELU),
    (", kernel: 1, act: identity", 1, 1, 1, 1, nn.Identity),
], ids=["default", "stride_relu6", "depthwise_silu", "dilated_gelu", "no_activation"])
def test_conv_bn_act_equals_torchvision_layout(args: str, kernel: int, stride: int, groups: int, dilation: int, act: type[nn.Module],
                                              tmp_path: Path) -> None:
    ref = _conv_norm_act(8, 16, kernel, stride, groups, act, dilation).double().eval()
    _randomize(ref)
    gm = _build(tmp_path, "graphc:conv", "  x: {shape: [B, 8, H, W], example: {B: 2, H: 12, W: 12}}\n",
                f"  out: {{block: conv_bn_act, in: x, c: 16{args}}}\n")
    _load(gm, ref, lambda name, v: {f"out.{ {'0': 'conv', '1': 'bn'}[name[0]]}{name[1:]}": v})
    x = torch.randn(2, 8, 13, 11, dtype=torch.float64)
    with torch.no_grad():
        _same(gm(x), ref(x))


# --- FiLM (Perez et al., 2018) ----------------------------------------------------------------


class FiLM(nn.Module):
    """x * gamma(z) + beta(z), gamma and beta linear in z, broadcast over x's trailing dims."""

    def __init__(self, cond: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(cond, channels)
        self.beta = nn.Linear(cond, channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        shape = (z.shape[0], -1) + (1,) * (x.dim() - 2)
        return x * self.gamma(z).view(shape) + self.beta(z).view(shape)


@pytest.mark.parametrize("spatial", [0, 1, 2, 3])
def test_film_equals_reference(spatial: int, tmp_path: Path) -> None:
    ref = FiLM(5, 6).double().eval()
    _randomize(ref)
    dims = ["H", "W", "L"][:spatial]
    shape = ", ".join(["B", "6", *dims])
    gm = _build(tmp_path, "graphc:film", f"  x: {{shape: [{shape}], example: {{B: 2}}}}\n  z: {{shape: [B, 5]}}\n",
                f"  out: {{block: film, in: [x, z], c: 6, spatial: {spatial}}}\n")
    _load(gm, ref, lambda name, v: {f"out.{name}": v})
    x, z = torch.randn(3, 6, *[4 + i for i in range(spatial)], dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        _same(gm(x, z), ref(x, z))


# --- ONNX -------------------------------------------------------------------------------------


def test_library_spec_exports_to_onnx_and_verifies(tmp_path: Path) -> None:
    spec = tmp_path / "lib.yaml"
    spec.write_text(
        "graphc: 1\nname: lib_onnx\ninclude: [graphc:conv, graphc:film, graphc:transformer]\n"
        "inputs:\n  image: {shape: [B, 3, 16, 16], example: {B: 2}}\n  z: {shape: [B, 4]}\n  pad: {shape: [B, 64], dtype: bool}\n"
        "nodes:\n"
        "  stem: {block: conv_bn_act, in: image, c: 16, stride: 2, act: relu6}\n"
        "  film: {block: film, in: [stem, z], c: 16}\n"
        "  tokens: {op: flatten, in: film, start: 2}\n"
        "  seq: {op: transpose, dim0: 1, dim1: 2}\n"
        "  enc: {block: transformer_encoder_padded, in: [seq, pad], d: 16, heads: 2, ff: 32, norm_first: true, activation: gelu, repeat: 2}\n"
        "  dec: {block: transformer_decoder, in: [seq, enc], d: 16, heads: 2, ff: 32, causal: true}\n"
        "outputs: {y: dec}\n"
    )
    result = graphc.export_onnx(str(spec), tmp_path / "lib.onnx")
    assert result.verify is not None and result.verify.passed, result.verify
    assert (tmp_path / "lib.onnx").stat().st_size > 10_000


# --- resolution: names only, from the shipped list ----------------------------------------------


def test_shipped_names_are_the_files_in_graphc_blocks() -> None:
    assert library.names() == sorted(p.stem for p in BLOCKS.glob("*.yaml"))
    assert {"transformer", "resnet", "mobilenet", "conv", "film"} <= set(library.names())


def test_every_shipped_block_is_documented_and_checks(tmp_path: Path) -> None:
    shipped = library.blocks()
    assert {"transformer_encoder", "transformer_decoder", "transformer_encoder_padded", "transformer_decoder_padded", "resnet_basic", "resnet_bottleneck", "inverted_residual", "film",
            "conv_bn_act"} <= set(shipped)
    for name, (_, raw) in shipped.items():
        assert raw.get("doc"), name
        for pname, p in raw["params"].items():
            assert isinstance(p, dict) and p.get("doc"), f"{name}.{pname}: every param says what it is"


def test_docs_table_is_current() -> None:
    text = (ROOT / "docs" / "spec.md").read_text()
    assert library.markdown() in text, "docs/spec.md's block table is stale: run python tools/gen_block_docs.py"


HEAD = "graphc: 1\nname: t\ninputs:\n  x: {shape: [B, 8]}\nnodes:\n  fc: {op: linear, out: 8}\noutputs: [fc]\n"


@pytest.mark.parametrize("name", ["graphc:", "graphc:../specs/mlp", "graphc:/etc/passwd", "graphc:resnet.yaml", "graphc:RESNET",
                                  "graphc:blocks/resnet", "graphc:${x}", "graphc:resnet\\x00", "graphc: resnet"])
def test_only_shipped_names_resolve(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is looked up in the shipped list: nothing of it becomes a path, nothing is read."""
    import graphc.spec.load as load

    read: list[Path] = []
    real = load.read_bounded
    monkeypatch.setattr(load, "read_bounded", lambda p: read.append(p) or real(p))
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEAD.replace("inputs:", f"include: ['{name}']\ninputs:"))
    with pytest.raises(SpecError) as info:
        graphc.check(str(spec))
    d = info.value.diagnostics[0]
    assert "graphc ships no block library" in d.message and "graphc:resnet" in d.message
    assert (d.pos.file, d.pos.line) == (str(spec), 3)
    assert read == [spec]  # the spec itself, and nothing else


def test_unknown_name_suggests_the_close_one(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEAD.replace("inputs:", "include: [graphc:transfomer]\ninputs:"))
    with pytest.raises(SpecError, match=r"no block library 'transfomer' \(did you mean 'transformer'\?\)"):
        graphc.check(str(spec))


def test_a_library_included_twice_adds_its_blocks_once(tmp_path: Path) -> None:
    """graphc:mobilenet includes graphc:conv itself; naming both is no 'defined twice'."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("graphc: 1\nname: t\ninclude: [graphc:conv, graphc:mobilenet]\ninputs:\n  x: {shape: [B, 3, 8, 8]}\n"
                    "nodes:\n  a: {block: conv_bn_act, in: x, c: 8}\n  b: {block: inverted_residual, c: 8}\noutputs: [b]\n")
    assert graphc.check(str(spec)).output_types()["b"].shape[1] == 8


def test_own_block_with_a_library_name_is_an_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEAD.replace("inputs:", "include: [graphc:film]\nblocks:\n  film:\n    inputs: [x]\n    nodes:\n      r: {op: relu}\n"
                                 "    outputs: [r]\ninputs:"))
    with pytest.raises(SpecError, match=r"block 'film' is also defined in an include \(.*graphc/blocks/film.yaml:\d+:\d+\)"):
        graphc.check(str(spec))


def _line_of(file: Path, text: str) -> int:
    return next(i for i, line in enumerate(file.read_text().splitlines(), 1) if text in line)


def test_mistake_inside_a_library_block_points_at_the_library_line_and_the_call(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("graphc: 1\nname: t\ninclude: [graphc:resnet, graphc:conv]\ninputs:\n  x: {shape: [B, 8, 8, 8]}\nnodes:\n"
                    "  stage: {block: resnet_basic, in: x, c: 16, repeat: 2}\n  head: {block: conv_bn_act, c: 8, act: rleu}\noutputs: [head]\n")
    with pytest.raises(SpecError) as info:
        graphc.check(str(spec))
    diags = sorted(info.value.diagnostics, key=lambda d: d.pos.file)
    assert len(diags) == 2
    act, add = diags
    assert Path(act.pos.file).resolve() == (BLOCKS / "conv.yaml").resolve() and act.pos.line == _line_of(BLOCKS / "conv.yaml", "act: {op:")
    assert "unknown op 'rleu' (did you mean 'relu'?)" in act.message and act.message.endswith(f"(called at {spec}:8:3)")
    assert Path(add.pos.file).resolve() == (BLOCKS / "resnet.yaml").resolve()
    assert add.pos.line == _line_of(BLOCKS / "resnet.yaml", "      sum: {op: add, in: [bn2,")
    assert "(in stage.0)" in add.message and add.message.endswith(f"(called at {spec}:7:3)")


def test_mistake_in_a_nested_library_block_names_the_users_call(tmp_path: Path) -> None:
    """inverted_residual calls conv_bn_act: the call named is the user's, not the library's."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("graphc: 1\nname: t\ninclude: [graphc:mobilenet]\ninputs:\n  x: {shape: [B, 5, 8, 8]}\nnodes:\n"
                    "  s: {block: inverted_residual, in: x, c: 8, t: 1, stride: 0}\noutputs: [s]\n")
    with pytest.raises(GraphcError) as info:
        graphc.check(str(spec))
    (d,) = info.value.diagnostics
    assert Path(d.pos.file).resolve() == (BLOCKS / "conv.yaml").resolve() and "(in s.dw)" in d.message
    assert d.message.endswith(f"(called at {spec}:7:3)"), d


def test_op_may_be_a_param_of_the_block(tmp_path: Path) -> None:
    """``{op: "${act}"}``: the op a copy uses is evaluated in its scope and checked like a written one."""
    spec = tmp_path / "spec.yaml"
    body = ("graphc: 1\nname: t\ninputs:\n  x: {shape: [B, 8]}\nblocks:\n  act:\n    params: {fn: str}\n    inputs: [h]\n"
            "    nodes:\n      f: {op: \"${fn}\", in: h}\n    outputs: [f]\nnodes:\n  a: {block: act, in: x, fn: tanh}\n"
            "  b: {block: act, fn: FN}\noutputs: [b]\n")
    spec.write_text(body.replace("FN", "sigmoid"))
    tg = graphc.check(str(spec))
    assert [tg.flat.nodes[n].op_name for n in ("a.f", "b.f")] == ["tanh", "sigmoid"]
    spec.write_text(body.replace("FN", "sigmoidd"))
    with pytest.raises(SpecError) as info:
        graphc.check(str(spec))
    (d,) = info.value.diagnostics
    assert d.message == "blocks.act.nodes.f (in b): unknown op 'sigmoidd' (did you mean 'sigmoid'?)" and (d.pos.line, d.pos.col) == (10, 15)
