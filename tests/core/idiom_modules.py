"""Small modules written the way other people write them: in-place residuals, position-major
flatten, PReLU, LSTM/GRU, GPT-2 Conv1D, hand-written attention with a fused QKV, nn.TransformerEncoder,
a classifier returning (logits, features); and the wrapper that makes a transformers model one of
them (one tensor in, its logits out)."""
import torch
from torch import nn
import torch.nn.functional as F

class Block(nn.Module):  # torchvision-style basic block with in-place residual add
    def __init__(s, c):
        super().__init__()
        s.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False); s.bn1 = nn.BatchNorm2d(c)
        s.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False); s.bn2 = nn.BatchNorm2d(c)
    def forward(s, x):
        out = F.relu(s.bn1(s.conv1(x)))
        out = s.bn2(s.conv2(out))
        out += x
        return F.relu(out)

class ResNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(1, 6, 3, padding=1); s.bn = nn.BatchNorm2d(6)
        s.layer = nn.Sequential(Block(6), Block(6)); s.fc = nn.Linear(6, 3)
    def forward(s, x):
        x = F.relu(s.bn(s.stem(x)))
        x = s.layer(x)
        return s.fc(x.mean((2, 3)))

class PosMajorCNN(nn.Module):  # CREPE-style position-major flatten
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 4, 3, padding=1); s.c2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        s.fc = nn.Linear(4 * 5 * 4, 7); s.out = nn.Linear(7, 3)
    def forward(s, x):
        x = F.relu(s.c2(F.relu(s.c1(x))))
        x = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
        return s.out(F.relu(s.fc(x)))

class PReLUNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Conv2d(1, 4, 3); s.a = nn.PReLU(4); s.fc1 = nn.Linear(4 * 6 * 6, 8); s.a2 = nn.PReLU(8)
        s.a3 = nn.PReLU(); s.fc2 = nn.Linear(8, 3)
    def forward(s, x):
        x = s.a(s.c(x)).flatten(1)
        return s.fc2(s.a3(s.a2(s.fc1(x))))

class LSTMNet(nn.Module):
    def __init__(s, cell="lstm", layers=1, bidirectional=False):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        s.rnn = rnn(5, 6, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        s.fc = nn.Linear(6 * (2 if bidirectional else 1), 3)
    def forward(s, x):
        out, _ = s.rnn(x)
        return s.fc(out[:, -1])

class Conv1D(nn.Module):  # GPT-2 style: weight stored (in, out)
    def __init__(s, nf, nx):
        super().__init__(); s.nf = nf
        s.weight = nn.Parameter(torch.randn(nx, nf) * 0.2); s.bias = nn.Parameter(torch.randn(nf) * 0.1)
    def forward(s, x):
        size_out = x.size()[:-1] + (s.nf,)
        x = torch.addmm(s.bias, x.view(-1, x.size(-1)), s.weight)
        return x.view(size_out)

class Conv1DNet(nn.Module):
    def __init__(s):
        super().__init__(); s.inp = nn.Linear(5, 8); s.c_fc = Conv1D(12, 8); s.c_proj = Conv1D(8, 12); s.head = nn.Linear(8, 3)
    def forward(s, x):
        h = s.inp(x)
        h = h + s.c_proj(F.gelu(s.c_fc(h)))
        return s.head(h.mean(1))

class MHA(nn.Module):  # hand-written attention: fused QKV, view into heads, explicit softmax
    def __init__(s, dim=8, heads=2):
        super().__init__(); s.h = heads; s.qkv = nn.Linear(dim, 3 * dim); s.proj = nn.Linear(dim, dim)
    def forward(s, x):
        B, T, C = x.shape
        q, k, v = s.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.view(B, T, s.h, C // s.h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (C // s.h) ** -0.5
        y = att.softmax(-1) @ v
        return s.proj(y.transpose(1, 2).reshape(B, T, C))

class TinyTransformer(nn.Module):
    def __init__(s, dim=8, heads=2):
        super().__init__(); s.inp = nn.Linear(5, dim); s.ln1 = nn.LayerNorm(dim); s.attn = MHA(dim, heads)
        s.ln2 = nn.LayerNorm(dim); s.fc1 = nn.Linear(dim, 12); s.fc2 = nn.Linear(12, dim); s.head = nn.Linear(dim, 3)
    def forward(s, x):
        x = s.inp(x)
        x = x + s.attn(s.ln1(x))
        x = x + s.fc2(F.gelu(s.fc1(s.ln2(x))))
        return s.head(x.mean(1))

class TorchEncoder(nn.Module):
    def __init__(s):
        super().__init__(); s.inp = nn.Linear(5, 8)
        s.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True), 1, enable_nested_tensor=False)
        s.head = nn.Linear(8, 3)
    def forward(s, x):
        return s.head(s.enc(s.inp(x)).mean(1))

class GroupedQueryAttention(nn.Module):
    """4 query heads on 2 key/value heads through SDPA's enable_gqa (no rotary: Q/K dims free)."""
    def __init__(s, heads=4, kv_heads=2, head_dim=4, dim=8):
        super().__init__(); s.h, s.g, s.d = heads, kv_heads, head_dim
        s.inp = nn.Linear(5, dim)
        s.q = nn.Linear(dim, heads * head_dim)
        s.k, s.v = nn.Linear(dim, kv_heads * head_dim), nn.Linear(dim, kv_heads * head_dim)
        s.o = nn.Linear(heads * head_dim, dim); s.head = nn.Linear(dim, 3)
    def forward(s, x):
        b, t, _ = x.shape
        x = s.inp(x)
        q = s.q(x).view(b, t, s.h, s.d).transpose(1, 2)
        k, v = (p(x).view(b, t, s.g, s.d).transpose(1, 2) for p in (s.k, s.v))
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return s.head(x + s.o(y.transpose(1, 2).reshape(b, t, -1))).mean(1)

class TwoOutputs(nn.Module):
    """(logits 10, features 12) from the 64 digit pixels, as timm-style models return features too."""
    def __init__(s):
        super().__init__()
        s.fc1 = nn.Linear(64, 16)
        s.fc2 = nn.Linear(16, 12)
        s.head = nn.Linear(12, 10)
    def forward(s, x):
        features = torch.relu(s.fc2(torch.relu(s.fc1(torch.flatten(x, 1)))))
        return s.head(features), features


class Logits(nn.Module):
    """A transformers model as a plain module: one tensor in, its logits out."""

    def __init__(self, model: nn.Module, key: str = "input_ids") -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.key: x}).logits
