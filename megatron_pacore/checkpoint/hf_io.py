"""Reading and writing Hugging Face safetensors checkpoints one tensor at a time.

`HFCheckpoint` opens a directory (single file or sharded with an index) and reads tensors
lazily, so peak memory is one tensor, not the model. `HFCheckpoint.check` turns a mismatch
with the family table into a ValueError that names the missing, unknown or wrongly shaped
tensors. `HFStreamWriter` writes safetensors shards (plus the index) tensor by tensor.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch

from megatron_pacore.checkpoint.mapping import HF_EMBEDDING, HF_OUTPUT, Table
from megatron_pacore.checkpoint.rawio import OpenFiles, pread_into
from megatron_pacore.hf_config import Family, dims_of, family_for, padded_vocab_size, tie_word_embeddings

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Tensors that some checkpoints carry and that carry no weights of ours.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
# Files copied verbatim from the Hugging Face directory on export (config, tokenizer, ...).
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
              "tokenizer.model", "added_tokens.json")


def load_hf_config(path: str | Path):
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"--hf {path}: no config.json (not a Hugging Face checkpoint directory)")
    return AutoConfig.from_pretrained(path)


def expected_shapes(hf_config: Any) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor name -> shape implied by the config, for every tensor its table reads."""
    d = dims_of(hf_config, padded_vocab_size(hf_config.vocab_size, 1))
    h, f, V = hf_config.hidden_size, hf_config.intermediate_size, hf_config.vocab_size
    per_layer = {
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (d.num_heads * d.head_dim, h),
        "self_attn.k_proj.weight": (d.num_groups * d.head_dim, h),
        "self_attn.v_proj.weight": (d.num_groups * d.head_dim, h),
        "self_attn.q_proj.bias": (d.num_heads * d.head_dim,),
        "self_attn.k_proj.bias": (d.num_groups * d.head_dim,),
        "self_attn.v_proj.bias": (d.num_groups * d.head_dim,),
        "self_attn.q_norm.weight": (d.head_dim,), "self_attn.k_norm.weight": (d.head_dim,),
        "self_attn.o_proj.weight": (h, d.num_heads * d.head_dim),
        "mlp.gate_proj.weight": (f, h), "mlp.up_proj.weight": (f, h), "mlp.down_proj.weight": (h, f),
    }
    shapes = {HF_EMBEDDING: (V, h), HF_OUTPUT: (V, h), "model.norm.weight": (h,)}
    return {name: shapes[name] if name in shapes else per_layer[name.split(".", 3)[3]]
            for name in Table.for_config(hf_config).hf_names()}


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
              torch.float8_e5m2: "F8_E5M2"}
_FROM_ST = {v: k for k, v in _ST_DTYPES.items()}
WRITE_CHUNK = 16 << 20  # bytes per write call; huge single writes stall longer in writeback


class HFCheckpoint:
    """A Hugging Face checkpoint directory, read lazily tensor by tensor.

    Tensors are read with plain positioned reads from the safetensors files (header parsed
    here), not through a memory map: mapping would add every page ever touched to the
    process's resident memory, so converting a model would look as large as the model.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = load_hf_config(self.path)
        self.family: Family = family_for(self.config)
        if (self.path / INDEX).is_file():
            weight_map = json.loads((self.path / INDEX).read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.path / SINGLE).is_file():
            files = [SINGLE]
        else:
            raise ValueError(f"--hf {self.path}: no {SINGLE} or {INDEX} (only safetensors are supported)")
        self._entries: dict[str, tuple[str, int, torch.dtype, tuple[int, ...], int]] = {}
        self._files = OpenFiles(self.path)
        for fname in files:
            with open(self.path / fname, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            for key, e in header.items():
                begin, end = e["data_offsets"]
                self._entries[key] = (fname, 8 + n + begin, _FROM_ST[e["dtype"]], tuple(e["shape"]), end - begin)

    @property
    def table(self) -> Table:
        """The family table of this checkpoint's config (family, tie flag, depth)."""
        return Table.for_config(self.config)

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][3]

    def get_dtype(self, name: str) -> torch.dtype:
        return self._entries[name][2]

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor of its stored dtype and shape)."""
        if name not in self._entries:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        _, _, dtype, shape, _ = self._entries[name]
        out = torch.empty(shape, dtype=dtype)
        self.read_rows(name, out)
        return out

    def read_rows(self, name: str, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Read rows [start, start + len(out)) of tensor `name` straight into `out`.

        `out` must be contiguous, of the stored dtype, with the stored trailing shape (the
        converter passes views of a preallocated global tensor, so no copy is made after the
        read). A 0-d tensor is one row.
        """
        if name not in self._entries:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        fname, offset, dtype, shape, nbytes = self._entries[name]
        rows = shape[0] if shape else 1
        n = out.shape[0] if out.dim() else 1
        if (out.dtype != dtype or not out.is_contiguous() or tuple(out.shape[1:]) != tuple(shape[1:])
                or start < 0 or start + n > rows):
            raise ValueError(f"{self.path / fname}: cannot read rows [{start}, {start + n}) of {name} "
                             f"{shape} {dtype} into {tuple(out.shape)} {out.dtype}")
        if _numel(shape) * out.element_size() != nbytes:
            raise ValueError(f"{self.path / fname}: {name} holds {nbytes} bytes for shape {shape} {dtype}")
        row_bytes = nbytes // rows if rows else 0
        pread_into(self._files.fd(fname), out, offset + start * row_bytes, f"{self.path / fname} ({name})")
        return out

    def close(self) -> None:
        """Close the file descriptors opened by reads (reads reopen them as needed)."""
        self._files.close()

    def check(self) -> None:
        """Raise ValueError naming missing, unknown (left unused) or wrongly shaped tensors.

        Every tensor of the checkpoint must be one the family table reads, except buffers
        that carry no weights (IGNORED_SUFFIXES) and, in a tied checkpoint, an `lm_head.weight`
        that is an exact copy of the embedding (one that differs would be silently dropped).
        """
        expected = expected_shapes(self.config)
        have = set(self._entries)
        missing = [n for n in expected if n not in have]
        unknown = sorted(n for n in have - set(expected)
                         if not n.endswith(IGNORED_SUFFIXES) and not self._is_tied_copy(n))
        if missing or unknown:
            tied_note = (" (tie_word_embeddings=True, but lm_head.weight is not a copy of the embedding)"
                         if HF_OUTPUT in unknown and tie_word_embeddings(self.config) else "")
            raise ValueError(
                f"{self.path} does not match the {self.family.name} table "
                f"({self.config.num_hidden_layers} layers): missing {missing[:20]}"
                f"{' ...' if len(missing) > 20 else ''}, unknown {unknown[:20]}"
                f"{' ...' if len(unknown) > 20 else ''}{tied_note}"
            )
        wrong = [f"{n}: {self.shape(n)} != {s}" for n, s in expected.items() if self.shape(n) != s]
        if wrong:
            raise ValueError(f"{self.path}: tensors of the wrong shape for its config: {wrong[:20]}")

    def _is_tied_copy(self, name: str) -> bool:
        if name != HF_OUTPUT or not tie_word_embeddings(self.config) or HF_EMBEDDING not in self._entries:
            return False
        if self.shape(name) != self.shape(HF_EMBEDDING) or self.get_dtype(name) != self.get_dtype(HF_EMBEDDING):
            return False
        return torch.equal(self.get(name), self.get(HF_EMBEDDING))


class HFStreamWriter:
    """Writes planned tensors into safetensors shards as they arrive, one at a time.

    The plan (name, shape, dtype, in write order) is known before any data, so each shard's
    header is written first and tensor bytes are appended directly: peak memory is the tensor
    being written. Shards hold at most `shard_bytes` (a larger tensor gets a shard of its own).
    """

    def __init__(self, out: str | Path, plan: list[tuple[str, tuple[int, ...], torch.dtype]],
                 shard_bytes: int = 4 << 30):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        shards: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = [[]]
        size = 0
        for name, shape, dtype in plan:
            nbytes = _numel(shape) * torch.empty((), dtype=dtype).element_size()
            if shards[-1] and size + nbytes > shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, tuple(shape), dtype, nbytes))
            size += nbytes
        self._shards = shards
        total = len(shards)
        self._fnames = [SINGLE] if total == 1 else [
            f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
        self._queue = [(i, entry) for i, shard in enumerate(shards) for entry in shard]
        self._pos = 0
        self._file = None
        self._file_idx = -1
        self.total_bytes = sum(e[3] for _, e in self._queue)

    def _open(self, idx: int) -> None:
        if self._file is not None:
            self._file.close()
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, dtype, nbytes in self._shards[idx]:
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._file = open(self.out / self._fnames[idx], "wb")
        self._file.write(len(raw).to_bytes(8, "little"))
        self._file.write(raw)
        self._file_idx = idx

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next planned tensor (names must arrive in plan order)."""
        self.write_parts(name, [tensor])

    def write_parts(self, name: str, parts: list[torch.Tensor]) -> None:
        """Append the next planned tensor given as row blocks (their concatenation along dim 0,
        e.g. strided views of a fused tensor): written block by block, never concatenated."""
        if self._pos >= len(self._queue):
            raise ValueError(f"tensor {name!r} was not planned")
        idx, (pname, shape, dtype, _) = self._queue[self._pos]
        if len(parts) == 1:
            got = tuple(parts[0].shape)
        else:
            got = (sum(p.shape[0] for p in parts), *parts[0].shape[1:]) if parts and parts[0].dim() else ()
        if (name != pname or got != shape or any(p.dtype != dtype for p in parts)
                or any(tuple(p.shape[1:]) != shape[1:] for p in parts[1:])):
            raise ValueError(f"expected {pname} {shape} {dtype}, got {name} {got} "
                             f"{[p.dtype for p in parts][:1]}")
        if idx != self._file_idx:
            self._open(idx)
        for part in parts:
            data = memoryview(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
            for i in range(0, len(data), WRITE_CHUNK):
                self._file.write(data[i:i + WRITE_CHUNK])
        self._pos += 1

    def close(self) -> None:
        if self._pos != len(self._queue):
            missing = [e[0] for _, e in self._queue[self._pos:]]
            raise ValueError(f"export incomplete, tensors not written: {missing[:10]}")
        if self._file is not None:
            self._file.close()
        if len(self._fnames) > 1:
            weight_map = {e[0]: self._fnames[i] for i, e in self._queue}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.out / INDEX).write_text(json.dumps(index, indent=2))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def copy_side_files(src: str | Path, dst: str | Path, names: Iterable[str] = SIDE_FILES) -> None:
    """Copy config / tokenizer files that exist in `src` into `dst`."""
    for name in names:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
