"""What each paper reported, quoted word for word from docs/papers.md (which cites the paper's section or
table), for the notebooks to print beside the measured numbers."""
from __future__ import annotations


OVIS_TABLE3 = ("Ovis, arXiv 2405.20797, Table 3", "Against a connector of equal size (Qwen1.5-7B-Chat, CLIP-L/336, "
               "the same data), Ovis wins on every benchmark, +8.8 % on average.")
XFORMER_ROW = ("X-Former, arXiv 2407.13851, ablation table (secondary)", "X-Former (dual cross-attention, "
               "reconstruction loss): VQAv2 55.0, GQA 34.9, OK-VQA 34.2.")
PAPER = {
    "table_size": [
        ("Ovis, arXiv 2405.20797, §4.1", "K = 2^17 = 131,072 entries (the training scripts pass "
                                         "`--visual_vocab_size 131072`)."),
        ("Ovis, arXiv 2405.20797", "The paper does not ablate K, the temperature, or soft against hard tokens."),
        OVIS_TABLE3,
    ],
    "indexings": [
        ("Ovis, arXiv 2405.20797, Appendix E", "Over 10k ImageNet images with Ovis-Llama3-8B, only 0.22 % of "
                                               "probability entries exceed 1e-4: about 288 of the 131,072 per "
                                               "patch, so the many indexings are effectively a few hundred."),
        ("Ovis, official code", "No top-k or sparsity: every patch's distribution is dense (the workbook's "
                                "indexings knob is an extension)."),
    ],
    "attention": [
        ("LLaViT, arXiv 2511.10301, §2.2 (secondary)", "LLaVA's LLM translates misaligned visual tokens in its early "
                                                       "layers, and visual-to-visual attention is critical."),
        ("LLaViT, arXiv 2511.10301, Abstract (components ablated in Table 3)",
         "LLaViT significantly outperforms the baseline LLaVA method on a multitude of benchmarks"),
        ("HoVLE, official model code", "HoVLE is causal everywhere: image tokens are not bidirectional."),
    ],
    "features": [
        ("X-Former, arXiv 2407.13851, ablation table (secondary)", "BLIP-2 retrained on the same 14M pairs (CL "
                                                                   "features only): VQAv2 52.4, GQA 33.1, OK-VQA "
                                                                   "31.5."),
        XFORMER_ROW,
        ("X-Former, arXiv 2407.13851, ablation table (secondary)", "MAE beats an intermediate CLIP layer (layer 26) "
                                                                   "as the local stream: 53.7 / 32.6 / 31.2 with "
                                                                   "the CLIP layer."),
    ],
    "comparison": [
        OVIS_TABLE3,
        ("VW-LMM, official repository's main results", "GQA 62.7 against 62.0; not a controlled ablation."),
        ("HoVLE, arXiv 2412.16158, Abstract", "HoVLE achieves performance close to leading compositional models on "
                                              "various benchmarks, outperforming previous monolithic models by a "
                                              "large margin."),
        XFORMER_ROW,
        ("LLaViT, arXiv 2511.10301, Abstract", "even surpassing models with double its parameter count"),
    ],
}

PAPER_NOTES = {
    "features": "Zero-shot, OPT-6.7B. Secondary: read from a public note on the paper, not checked against its PDF.",
    "comparison": "Ovis: against a connector of equal size; VW-LMM: VW-LMM-Vicuna-7B against LLaVA-1.5-7B; "
                  "X-Former: VQAv2 | GQA | OK-VQA; none is a like-for-like comparison of all six, which only this "
                  "workbook's tiny world gives.",
}


def paper_markdown(key: str) -> str:
    """What the paper(s) reported for a study, as Markdown quotes with their place in the paper (docs/papers.md)."""
    if key not in PAPER:
        raise ValueError(f"paper key {key!r}; allowed values: {sorted(PAPER)}")
    lines = ["**What the papers reported** (sources: docs/papers.md in the repository):", ""]
    for where, quote in PAPER[key]:
        lines.append(f"> {quote}  \n> — *{where}*")
        lines.append("")
    if key in PAPER_NOTES:
        lines.append(PAPER_NOTES[key])
    return "\n".join(lines)
