"""Write the built-in demo data sets (deterministic: fixed tables, fixed seed).

    .venv/bin/python hack/generate_demo_data.py [--out DIR]

writes ``DIR/{medical,finance,general}/{train,heldout}.jsonl`` (default: the folder of the package
``loraplane.trainer.demo_data``, i.e. the committed files the trainer reads as ``builtin://`` data;
tests/trainer/test_demo_data.py fails when they differ from what this writes).

Every record is Alpaca-shaped, ``{"instruction", "input", "output", "answer", "task"}``: ``answer``
is the short, objectively scorable part of ``output`` (a code, a label, a formula, a number) that
the Contains/ExactMatch metrics check, and ``task`` names the sub-task for per-task reporting
(trainers ignore it).

Every answer comes from a fixed table or a keyword rule below, so a small model can learn it with
LoRA in a few CPU minutes, while a base model mostly does not produce it unprompted (house label
vocabulary, exact ICD-10 codes, GICS sector names, formula wording).

How train and held-out differ (no held-out question equals a training question):

medical (English; use with template ``medical-en``)
  - ``icd10``: condition -> WHO ICD-10 code, 26 conditions. Held-out asks about the same conditions
    (the fact table is the knowledge taught) but only with question templates never used in training.
  - ``department``: two presenting symptoms -> referral department, 11 departments x 6 symptoms.
    Held-out uses symptom pairs never shown together in training (every single symptom is seen in
    training), other patient ages/sexes, and held-out-only question templates.
  - ``drug_class``: drug -> pharmacological class, 23 classes recognisable by their INN stem
    (-pril, -sartan, -olol, ...). Held-out asks about drugs never seen in training (same stems),
    with held-out-only question templates.

finance (English, three-part answers "1) Conclusion / 2) Basis / 3) Risk" of ``finance-analyst-en``;
the answer is the conclusion)
  - ``sentiment``: headline -> Bullish / Bearish / Neutral by a fixed event rule (21 event kinds).
    Held-out headlines name companies from a separate name pool never used in training, carry other
    figures, and use held-out-only question templates.
  - ``sector``: company "<Prefix> <Industry>" -> GICS sector (44 industry keywords, 11 sectors).
    Held-out companies use name prefixes never used in training, with held-out-only templates.
  - ``formula``: ratio name -> formula (15 ratios). Held-out asks about the same ratios with
    held-out-only question templates.

general (no system prompt; mixed in against forgetting and used to measure retention)
  Capitals, opposites, plurals, simple facts, day/month order and small-number arithmetic. The
  held-out items (countries, words, facts, number pairs) never occur in training: the split is by
  item, so held-out measures general ability, not recall of the mixed-in data.

No question contains its own answer (checked while generating), so echoing the question scores 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from loraplane.trainer.demo_data import DATA_DIR
from loraplane.trainer.templates import format_structured_answer

SEED = 20250607
FINANCE_TEMPLATE = "finance-analyst-en"
Record = dict[str, str]
Split = tuple[list[Record], list[Record]]

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)


def _norm(text: str) -> str:
    """Same normalisation as the Contains metric (case-folded, punctuation -> space)."""
    return _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _found(needle: str, haystack: str) -> bool:
    return f" {_norm(needle)} " in f" {_norm(haystack)} "


def record(task: str, instruction: str, input_: str, output: str, answer: str) -> Record:
    """One record; checks that the output contains the answer and the question does not."""
    if answer not in output or not _found(answer, output):
        raise AssertionError(f"{task}: answer {answer!r} not in output {output!r}")
    if _found(answer, f"{instruction} {input_}"):
        raise AssertionError(f"{task}: the question gives the answer away: {instruction!r} {input_!r}")
    return {"instruction": instruction, "input": input_, "output": output, "answer": answer, "task": task}


def _fill(template: tuple[str, str], **values: str) -> tuple[str, str]:
    """(instruction, input) of a question template; str.replace so values may hold any text."""
    out = []
    for part in template:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        out.append(part)
    return out[0], out[1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class Questions(NamedTuple):
    """The question templates (instruction, input) of one task: training ones, and ones only held-out asks."""

    train: tuple[tuple[str, str], ...]
    heldout: tuple[tuple[str, str], ...]

    def heldout_at(self, j: int) -> tuple[str, str]:
        """The held-out template for the j-th held-out item (cycling through them)."""
        return self.heldout[j % len(self.heldout)]


# --------------------------------------------------------------------------------------------- medical

# (condition as asked, WHO ICD-10 title, code)
ICD10: tuple[tuple[str, str, str], ...] = (
    ("essential hypertension", "Essential (primary) hypertension", "I10"),
    ("type 2 diabetes mellitus without complications", "Type 2 diabetes mellitus without complications", "E11.9"),
    ("type 1 diabetes mellitus without complications", "Type 1 diabetes mellitus without complications", "E10.9"),
    ("asthma", "Asthma, unspecified", "J45.9"),
    ("chronic obstructive pulmonary disease", "Chronic obstructive pulmonary disease, unspecified", "J44.9"),
    ("pneumonia with no organism identified", "Pneumonia, unspecified", "J18.9"),
    ("acute pharyngitis", "Acute pharyngitis, unspecified", "J02.9"),
    ("acute sinusitis", "Acute sinusitis, unspecified", "J01.9"),
    ("acute myocardial infarction", "Acute myocardial infarction, unspecified", "I21.9"),
    ("heart failure", "Heart failure, unspecified", "I50.9"),
    ("ischaemic stroke", "Cerebral infarction, unspecified", "I63.9"),
    ("migraine", "Migraine, unspecified", "G43.9"),
    ("epilepsy", "Epilepsy, unspecified", "G40.9"),
    ("Parkinson's disease", "Parkinson's disease", "G20"),
    ("a depressive episode", "Depressive episode, unspecified", "F32.9"),
    ("generalized anxiety disorder", "Generalized anxiety disorder", "F41.1"),
    ("gastro-oesophageal reflux disease", "Gastro-oesophageal reflux disease without oesophagitis", "K21.9"),
    ("gastritis", "Gastritis, unspecified", "K29.7"),
    ("urinary tract infection", "Urinary tract infection, site not specified", "N39.0"),
    ("a kidney stone", "Calculus of kidney", "N20.0"),
    ("low back pain", "Low back pain", "M54.5"),
    ("gout", "Gout, unspecified", "M10.9"),
    ("hypothyroidism", "Hypothyroidism, unspecified", "E03.9"),
    ("iron deficiency anaemia", "Iron deficiency anaemia, unspecified", "D50.9"),
    ("acne vulgaris", "Acne vulgaris", "L70.0"),
    ("otitis media", "Otitis media, unspecified", "H66.9"),
)
ICD10_Q = Questions(
    train=(
        ("What is the ICD-10 code for {c}?", ""),
        ("Give the ICD-10 code for a diagnosis of {c}.", ""),
        ("Which ICD-10 code should be recorded for {c}?", ""),
        ("ICD-10 code lookup.", "{C}"),
        ("Code this diagnosis in ICD-10.", "Diagnosis: {c}"),
        ("A discharge summary lists {c}. Which ICD-10 code applies?", ""),
    ),
    heldout=(
        ("Assign the ICD-10 code.", "The clinician documented {c}."),
        ("For the claim form, how is {c} coded in ICD-10?", ""),
        ("Which ICD-10 code matches the diagnosis below?", "{C}, confirmed at today's visit"),
    ),
)
ICD10_NOTES = (
    "Confirm the diagnosis in the record before coding.",
    "Use a more specific code if the record supports it.",
)

# department -> (why, six symptoms)
DEPARTMENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Cardiology",
        "These symptoms point to the heart or circulation.",
        (
            "chest pain on exertion",
            "palpitations",
            "swollen ankles",
            "breathlessness when lying flat",
            "an irregular pulse",
            "fainting during exercise",
        ),
    ),
    (
        "Neurology",
        "These symptoms point to the brain or nerves.",
        (
            "weakness on one side of the body",
            "slurred speech",
            "a tremor at rest",
            "recurrent seizures",
            "numbness and tingling in the feet",
            "worsening memory loss",
        ),
    ),
    (
        "Gastroenterology",
        "These symptoms point to the digestive tract or liver.",
        (
            "heartburn after meals",
            "black tarry stools",
            "difficulty swallowing",
            "upper abdominal bloating",
            "chronic diarrhoea",
            "yellowing of the skin",
        ),
    ),
    (
        "Dermatology",
        "These symptoms point to the skin, hair or nails.",
        (
            "an itchy red rash",
            "scaly plaques on the elbows",
            "a mole that changed colour",
            "recurrent hives",
            "patchy hair loss",
            "a skin sore that does not heal",
        ),
    ),
    (
        "Ophthalmology",
        "These symptoms point to the eye.",
        (
            "blurred vision",
            "a red painful eye",
            "new floaters",
            "loss of side vision",
            "sticky eye discharge",
            "halos around lights",
        ),
    ),
    (
        "Otolaryngology",
        "These symptoms point to the ear, nose or throat.",
        (
            "ear pain",
            "hearing loss",
            "recurrent nosebleeds",
            "a hoarse voice for weeks",
            "ringing in the ears",
            "a blocked nose on one side",
        ),
    ),
    (
        "Urology",
        "These symptoms point to the urinary tract.",
        (
            "blood in the urine",
            "a weak urine stream",
            "pain spreading from the flank to the groin",
            "getting up at night to urinate",
            "testicular swelling",
            "difficulty starting urination",
        ),
    ),
    (
        "Orthopedics",
        "These symptoms point to bones, joints or ligaments.",
        (
            "knee pain when climbing stairs",
            "a swollen ankle after a twist",
            "a stiff painful shoulder",
            "hip pain when walking",
            "wrist pain after a fall",
            "a knee that locks",
        ),
    ),
    (
        "Endocrinology",
        "These symptoms point to the hormone glands or metabolism.",
        (
            "excessive thirst",
            "heat intolerance",
            "a swelling at the front of the neck",
            "cold intolerance",
            "very high blood sugar readings",
            "weight loss despite a big appetite",
        ),
    ),
    (
        "Psychiatry",
        "These symptoms point to mental health.",
        (
            "persistent low mood",
            "panic attacks",
            "hearing voices",
            "loss of interest in activities",
            "constant excessive worry",
            "intrusive repetitive thoughts",
        ),
    ),
    (
        "Pulmonology",
        "These symptoms point to the lungs or airways.",
        (
            "a cough lasting two months",
            "wheezing",
            "coughing up blood",
            "snoring with daytime sleepiness",
            "recurrent chest infections",
            "noisy breathing on exertion",
        ),
    ),
)
DEPARTMENT_Q = Questions(
    train=(
        ("Which department should this patient be referred to?", "A {age}-year-old {sex} reports {s1} and {s2}."),
        ("Triage to a specialty department.", "Symptoms: {s1}; {s2}. Age {age}, {sex}."),
        ("A {age}-year-old {sex} presents with {s1} and {s2}. Which specialty should see them first?", ""),
        ("Route this referral to the right department.", "{Sex}, {age}: {s1}, {s2}"),
    ),
    heldout=(
        ("Which outpatient clinic fits this case best?", "{Sex} aged {age} with {s1} and also {s2}."),
        ("Recommend the specialist department for a {age}-year-old {sex} complaining of {s1} together with {s2}.", ""),
    ),
)
DEPARTMENT_HELDOUT_PAIRS_PER_DEPT = 2
URGENT_NOTE = "Seek emergency care if symptoms are sudden or severe."

# (class, stem, training drugs, held-out drugs)
DRUG_CLASSES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("ACE inhibitor", "-pril", ("lisinopril", "enalapril", "ramipril", "captopril"), ("quinapril", "perindopril")),
    ("Angiotensin receptor blocker", "-sartan", ("losartan", "valsartan", "irbesartan"), ("telmisartan", "olmesartan")),
    ("Beta blocker", "-olol", ("metoprolol", "atenolol", "propranolol", "bisoprolol"), ("nebivolol", "nadolol")),
    ("Statin", "-statin", ("atorvastatin", "simvastatin", "rosuvastatin"), ("pravastatin", "pitavastatin")),
    (
        "Proton pump inhibitor",
        "-prazole",
        ("omeprazole", "esomeprazole", "lansoprazole"),
        ("pantoprazole", "rabeprazole"),
    ),
    (
        "Calcium channel blocker",
        "-dipine",
        ("amlodipine", "nifedipine", "felodipine"),
        ("nicardipine", "lercanidipine"),
    ),
    ("Fluoroquinolone", "-floxacin", ("ciprofloxacin", "levofloxacin", "ofloxacin"), ("moxifloxacin", "norfloxacin")),
    ("SGLT2 inhibitor", "-gliflozin", ("empagliflozin", "dapagliflozin"), ("canagliflozin", "ertugliflozin")),
    ("DPP-4 inhibitor", "-gliptin", ("sitagliptin", "saxagliptin", "vildagliptin"), ("linagliptin", "alogliptin")),
    ("H2 receptor antagonist", "-tidine", ("ranitidine", "famotidine"), ("cimetidine", "nizatidine")),
    ("Triptan", "-triptan", ("sumatriptan", "rizatriptan", "zolmitriptan"), ("eletriptan", "naratriptan")),
    ("Benzodiazepine", "-azepam", ("diazepam", "lorazepam", "clonazepam"), ("temazepam", "oxazepam")),
    ("Factor Xa inhibitor", "-xaban", ("rivaroxaban", "apixaban"), ("edoxaban", "betrixaban")),
    ("Tetracycline antibiotic", "-cycline", ("doxycycline", "minocycline"), ("demeclocycline", "lymecycline")),
    ("Leukotriene receptor antagonist", "-lukast", ("montelukast", "pranlukast"), ("zafirlukast",)),
    ("5-HT3 antagonist", "-setron", ("ondansetron", "granisetron"), ("palonosetron", "dolasetron")),
    ("Tyrosine kinase inhibitor", "-tinib", ("imatinib", "erlotinib", "gefitinib"), ("dasatinib", "sunitinib")),
    ("Monoclonal antibody", "-mab", ("adalimumab", "infliximab", "rituximab"), ("trastuzumab", "bevacizumab")),
    (
        "Penicillin antibiotic",
        "-cillin",
        ("amoxicillin", "ampicillin", "flucloxacillin"),
        ("dicloxacillin", "piperacillin"),
    ),
    ("Bisphosphonate", "-dronate", ("alendronate", "risedronate"), ("ibandronate", "etidronate")),
    ("Azole antifungal", "-conazole", ("fluconazole", "itraconazole"), ("voriconazole", "posaconazole")),
    ("Alpha-1 blocker", "-osin", ("tamsulosin", "doxazosin", "prazosin"), ("terazosin", "alfuzosin")),
    ("Nucleoside analogue antiviral", "-ciclovir", ("aciclovir", "ganciclovir"), ("valaciclovir", "famciclovir")),
)
DRUG_Q = Questions(
    train=(
        ("Which drug class does {d} belong to?", ""),
        ("Name the pharmacological class of {d}.", ""),
        ("Classify this medication by drug class.", "{D}"),
        ("A patient's medication list includes {d}. What class of drug is it?", ""),
    ),
    heldout=(
        ("What kind of medicine is {d}, by drug class?", ""),
        ("Identify the drug class.", "New prescription: {D}"),
    ),
)
DRUG_TRAIN_REPEATS = 2


def medical(rng: random.Random) -> Split:
    train: list[Record] = []
    heldout: list[Record] = []

    for i, (condition, title, code) in enumerate(ICD10):
        for template in ICD10_Q.train:
            q = _fill(template, c=condition, C=_cap(condition))
            note = rng.choice(ICD10_NOTES)
            train.append(record("icd10", *q, f"{code}\n{title} (ICD-10 {code}). {note}", code))
        q = _fill(ICD10_Q.heldout_at(i), c=condition, C=_cap(condition))
        heldout.append(record("icd10", *q, f"{code}\n{title} (ICD-10 {code}). {ICD10_NOTES[0]}", code))

    def patient() -> dict[str, str]:
        sex = rng.choice(("man", "woman"))
        return {"age": str(rng.randint(18, 85)), "sex": sex, "Sex": _cap(sex)}

    for dept, why, symptoms in DEPARTMENTS:
        pairs = list(itertools.combinations(symptoms, 2))
        rng.shuffle(pairs)
        cut = len(pairs) - DEPARTMENT_HELDOUT_PAIRS_PER_DEPT
        for s1, s2 in pairs[:cut]:
            q = _fill(rng.choice(DEPARTMENT_Q.train), s1=s1, s2=s2, **patient())
            train.append(record("department", *q, f"{dept}\n{why} {URGENT_NOTE}", dept))
        for j, (s1, s2) in enumerate(pairs[cut:]):
            q = _fill(DEPARTMENT_Q.heldout_at(j), s1=s1, s2=s2, **patient())
            heldout.append(record("department", *q, f"{dept}\n{why} {URGENT_NOTE}", dept))

    for cls, stem, train_drugs, heldout_drugs in DRUG_CLASSES:

        def answer(drug: str, cls: str = cls, stem: str = stem) -> str:
            return f"{cls}\n{_cap(drug)} carries the stem {stem}, which marks this drug class."

        for drug in train_drugs:
            for template in rng.sample(DRUG_Q.train, DRUG_TRAIN_REPEATS):
                q = _fill(template, d=drug, D=_cap(drug))
                train.append(record("drug_class", *q, answer(drug), cls))
        for j, drug in enumerate(heldout_drugs):
            q = _fill(DRUG_Q.heldout_at(j), d=drug, D=_cap(drug))
            heldout.append(record("drug_class", *q, answer(drug), cls))
    return train, heldout


# --------------------------------------------------------------------------------------------- finance

TRAIN_COMPANY_PREFIXES = (
    "Northwind",
    "Bluepeak",
    "Redstone",
    "Silverline",
    "Harborview",
    "Greenfield",
    "Ironbridge",
    "Clearwater",
    "Oakmont",
    "Pinecrest",
    "Brightwater",
    "Stonegate",
    "Eastgate",
    "Goldcrest",
    "Westbrook",
    "Sunridge",
    "Blackwood",
    "Riverton",
)
HELDOUT_COMPANY_PREFIXES = (
    "Crescent Bay",
    "Falconer",
    "Willowbrook",
    "Amberly",
    "Kestrel",
    "Lakeshore",
    "Copperfield",
    "Rosewood",
    "Highmoor",
    "Tidewater",
)
COMPANY_SUFFIXES = ("Holdings", "Group", "Corp", "Industries", "Inc.")

# label -> [(event with {n}/{p}/{q}/{date} figures, basis)]
SENTIMENT_EVENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "Bullish": (
        ("raises its full-year profit guidance", "Higher guidance signals stronger expected earnings."),
        ("beats Q{q} earnings estimates", "Earnings above consensus show better-than-expected profitability."),
        ("announces a ${n} million share buyback", "A buyback returns cash to shareholders and signals confidence."),
        ("wins a ${n} million multi-year contract", "A large new contract adds to future revenue."),
        ("raises its quarterly dividend by {p}%", "A higher dividend signals confidence in cash flow."),
        ("reports record quarterly revenue", "Record revenue shows strong demand."),
        ("receives regulatory approval for its new product", "The approval opens a new source of revenue."),
    ),
    "Bearish": (
        ("cuts its full-year profit guidance", "Lower guidance signals weaker expected earnings."),
        ("misses Q{q} earnings estimates", "Earnings below consensus show weaker profitability."),
        ("suspends its dividend", "Suspending the dividend signals pressure on cash flow."),
        ("faces a regulatory investigation into its accounts", "An accounting probe adds legal and credibility risk."),
        ("recalls {n},000 products over safety defects", "A recall brings costs and damages the brand."),
        ("loses its largest customer", "Losing the largest customer removes a major source of revenue."),
        ("is downgraded to junk by a ratings agency", "A downgrade raises borrowing costs."),
    ),
    "Neutral": (
        ("schedules its Q{q} earnings call for {date}", "An earnings-call date is routine and carries no new numbers."),
        ("will present at an industry conference next month", "A conference appearance is routine."),
        ("appoints a new head of investor relations", "A routine staffing change does not affect earnings."),
        ("confirms the date of its annual shareholder meeting", "A meeting date is routine information."),
        ("completes its previously announced name change", "The change was already known and has no financial effect."),
        ("moves its head office within the same city", "An office move within the city has no material effect."),
        ("publishes its annual sustainability report", "The report is routine disclosure with no new financial data."),
    ),
}
SENTIMENT_RISKS: dict[str, tuple[str, ...]] = {
    "Bullish": ("The good news may already be priced in.", "Execution or the wider market can still disappoint."),
    "Bearish": ("The bad news may already be priced in.", "Management action could limit the damage."),
    "Neutral": ("Later announcements could change the picture.", "Watch the next results for real news."),
}
SENTIMENT_Q = Questions(
    train=(
        ("Classify the market sentiment of this headline.", "{h}"),
        ("What is the likely impact of this headline on the company's share price?", "{h}"),
        ("Rate the sentiment of the following news for shareholders.", "{h}"),
        ("Headline: {h}. What is your sentiment call?", ""),
    ),
    heldout=(
        ("As an analyst, judge how investors will read this news.", "Breaking: {h}"),
        ("Give a sentiment rating for the stock after this announcement: {h}", ""),
    ),
)
SENTIMENT_TRAIN_PER_EVENT = 7
SENTIMENT_HELDOUT_EXTRA = 9  # held-out: every event once, plus this many more
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# GICS sector -> industry keywords used in company names
SECTORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Information Technology", ("Software", "Semiconductor", "Cloud Computing", "Cybersecurity")),
    ("Health Care", ("Pharmaceuticals", "Biotech", "Medical Devices", "Diagnostics")),
    ("Financials", ("Bancorp", "Insurance", "Asset Management", "Brokerage")),
    ("Energy", ("Oil & Gas", "Drilling", "Petroleum Refining", "Oilfield Services")),
    ("Utilities", ("Electric Power", "Water Utility", "Power & Light", "Renewable Power")),
    ("Materials", ("Chemicals", "Steel", "Mining", "Packaging")),
    ("Industrials", ("Aerospace", "Logistics", "Machinery", "Railroad")),
    ("Consumer Staples", ("Foods", "Beverages", "Household Products", "Grocery Stores")),
    ("Consumer Discretionary", ("Apparel", "Hotels & Resorts", "Restaurants", "Homebuilders")),
    ("Communication Services", ("Telecom", "Broadcasting", "Publishing", "Video Games")),
    ("Real Estate", ("REIT", "Realty", "Office Properties", "Property Management")),
)
SECTOR_Q = Questions(
    train=(
        ("Which GICS sector does this company belong to?", "{name} ({ticker})"),
        ("Classify {name} by GICS sector.", ""),
        ("Sector classification request.", "Company: {name}, ticker {ticker}"),
    ),
    heldout=(
        ("An investor asks which sector {name} ({ticker}) trades in. Answer with the GICS sector.", ""),
        ("Map the company below to its GICS sector.", "{ticker}: {name}"),
    ),
)
SECTOR_TRAIN_PER_KEYWORD = 3
SECTOR_HELDOUT_PER_SECTOR = 2
SECTOR_RISKS = (
    "A diversified company can be reclassified as its revenue mix changes.",
    "Check the current GICS assignment in the latest filings.",
)

# (ratio name, formula, what it measures, caveat)
RATIOS: tuple[tuple[str, str, str, str], ...] = (
    (
        "return on equity",
        "Net income / Shareholders' equity",
        "profit earned on shareholders' capital",
        "Leverage and buybacks can inflate it.",
    ),
    (
        "return on assets",
        "Net income / Total assets",
        "profit earned on all assets",
        "Asset-light businesses look better by construction.",
    ),
    (
        "gross margin",
        "Gross profit / Revenue",
        "profit left after direct costs",
        "Cost allocation differs between companies.",
    ),
    (
        "net profit margin",
        "Net income / Revenue",
        "profit kept from each unit of sales",
        "One-off items can distort it.",
    ),
    (
        "current ratio",
        "Current assets / Current liabilities",
        "short-term liquidity",
        "Slow-moving inventory can overstate it.",
    ),
    (
        "quick ratio",
        "(Current assets - Inventory) / Current liabilities",
        "liquidity without inventory",
        "Receivables may not all be collectable.",
    ),
    (
        "debt-to-equity ratio",
        "Total debt / Shareholders' equity",
        "financial leverage",
        "Lease and off-balance-sheet debt can be missed.",
    ),
    (
        "price-to-earnings ratio",
        "Share price / Earnings per share",
        "how much investors pay per unit of profit",
        "Depressed earnings make it look high.",
    ),
    (
        "earnings per share",
        "Net income / Shares outstanding",
        "profit attributable to each share",
        "Buybacks raise it without higher profit.",
    ),
    (
        "dividend payout ratio",
        "Dividends / Net income",
        "the share of profit paid out",
        "A payout above 100% is rarely sustainable.",
    ),
    (
        "interest coverage ratio",
        "EBIT / Interest expense",
        "ability to pay interest from operating profit",
        "Floating-rate debt can raise interest costs.",
    ),
    (
        "asset turnover",
        "Revenue / Total assets",
        "sales generated per unit of assets",
        "It varies widely between industries.",
    ),
    (
        "price-to-book ratio",
        "Share price / Book value per share",
        "price relative to net assets",
        "Intangible assets are often missing from book value.",
    ),
    (
        "inventory turnover",
        "Cost of goods sold / Average inventory",
        "how fast inventory is sold",
        "Seasonal stock levels distort it.",
    ),
    (
        "dividend yield",
        "Annual dividend per share / Share price",
        "cash return from dividends",
        "A falling share price can inflate it.",
    ),
)
FORMULA_Q = Questions(
    train=(
        ("What is the formula for {r}?", ""),
        ("How is {r} calculated?", ""),
        ("Give the standard definition of {r} as a formula.", ""),
        ("Formula lookup.", "{R}"),
        ("Express {r} as a formula.", ""),
        ("An intern asks how to compute {r}. What formula should they use?", ""),
    ),
    heldout=(
        ("Which calculation gives a company's {r}?", ""),
        ("Show the computation behind the metric below.", "Metric: {R}"),
    ),
)


def _ticker(name: str) -> str:
    letters = [c for c in name.upper() if c.isalpha()]
    words = [w for w in re.split(r"[^A-Za-z]+", name.upper()) if w]
    return "".join(letters[:3]) + (words[-1][0] if len(words) > 1 else letters[-1])


def _analyst(conclusion: str, basis: str, risk: str) -> str:
    return format_structured_answer(FINANCE_TEMPLATE, {"conclusion": conclusion, "basis": basis, "risk": risk})


def finance(rng: random.Random) -> Split:
    train: list[Record] = []
    heldout: list[Record] = []

    def figures() -> dict[str, str]:
        return {
            "n": str(rng.choice((50, 80, 120, 150, 200, 250, 300, 400, 500, 750))),
            "p": str(rng.choice((3, 5, 6, 8, 10, 12, 15, 20))),
            "q": str(rng.randint(1, 4)),
            "date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}",
        }

    def company(prefixes: Sequence[str]) -> str:
        return f"{rng.choice(prefixes)} {rng.choice(COMPANY_SUFFIXES)}"

    def sentiment(label: str, event: str, basis: str, prefixes: Sequence[str], template: tuple[str, str]) -> Record:
        headline = f"{company(prefixes)} {_fill((event, ''), **figures())[0]}"
        q = _fill(template, h=headline)
        return record("sentiment", *q, _analyst(label, basis, rng.choice(SENTIMENT_RISKS[label])), label)

    events = [(label, event, basis) for label, items in SENTIMENT_EVENTS.items() for event, basis in items]
    for label, event, basis in events:
        for _ in range(SENTIMENT_TRAIN_PER_EVENT):
            train.append(sentiment(label, event, basis, TRAIN_COMPANY_PREFIXES, rng.choice(SENTIMENT_Q.train)))
    held_events = events + rng.sample(events, SENTIMENT_HELDOUT_EXTRA)
    for j, (label, event, basis) in enumerate(held_events):
        template = SENTIMENT_Q.heldout_at(j)
        heldout.append(sentiment(label, event, basis, HELDOUT_COMPANY_PREFIXES, template))

    def sector(gics: str, keyword: str, prefix: str, template: tuple[str, str]) -> Record:
        name = f"{prefix} {keyword}"
        q = _fill(template, name=name, ticker=_ticker(name))
        basis = f"{keyword} businesses fall under the {gics} sector in GICS."
        return record("sector", *q, _analyst(gics, basis, rng.choice(SECTOR_RISKS)), gics)

    for gics, keywords in SECTORS:
        for keyword in keywords:
            for prefix in rng.sample(TRAIN_COMPANY_PREFIXES, SECTOR_TRAIN_PER_KEYWORD):
                train.append(sector(gics, keyword, prefix, rng.choice(SECTOR_Q.train)))
        for j, keyword in enumerate(rng.sample(keywords, SECTOR_HELDOUT_PER_SECTOR)):
            prefix = rng.choice(HELDOUT_COMPANY_PREFIXES)
            heldout.append(sector(gics, keyword, prefix, SECTOR_Q.heldout_at(j)))

    for ratio, formula, measures, caveat in RATIOS:
        out = _analyst(formula, f"It measures {measures}.", caveat)
        for template in FORMULA_Q.train:
            train.append(record("formula", *_fill(template, r=ratio, R=_cap(ratio)), out, formula))
        for template in FORMULA_Q.heldout:
            heldout.append(record("formula", *_fill(template, r=ratio, R=_cap(ratio)), out, formula))
    return train, heldout


# --------------------------------------------------------------------------------------------- general

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Russia", "Moscow"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Argentina", "Buenos Aires"),
    ("Greece", "Athens"),
    ("Turkey", "Ankara"),
    ("Kenya", "Nairobi"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Hungary", "Budapest"),
    ("Ireland", "Dublin"),
    ("the United Kingdom", "London"),
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"),
    ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"),
    ("Nigeria", "Abuja"),
    ("Czechia", "Prague"),
    ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"),
    ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"),
    ("New Zealand", "Wellington"),
    ("Venezuela", "Caracas"),
    ("Afghanistan", "Kabul"),
    ("Nepal", "Kathmandu"),
    ("Qatar", "Doha"),
    ("Lebanon", "Beirut"),
    ("Syria", "Damascus"),
    ("Jordan", "Amman"),
    ("Ghana", "Accra"),
    ("Uganda", "Kampala"),
    ("Zimbabwe", "Harare"),
    ("Jamaica", "Kingston"),
    ("Uruguay", "Montevideo"),
    ("Ecuador", "Quito"),
    ("Estonia", "Tallinn"),
    ("Latvia", "Riga"),
)
OPPOSITES: tuple[tuple[str, str], ...] = (
    ("hot", "cold"),
    ("up", "down"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("dark", "light"),
    ("early", "late"),
    ("full", "empty"),
    ("rich", "poor"),
    ("wet", "dry"),
    ("day", "night"),
    ("win", "lose"),
    ("buy", "sell"),
    ("push", "pull"),
    ("before", "after"),
    ("inside", "outside"),
    ("above", "below"),
    ("strong", "weak"),
    ("thick", "thin"),
    ("wide", "narrow"),
    ("deep", "shallow"),
    ("clean", "dirty"),
    ("cheap", "expensive"),
    ("true", "false"),
    ("love", "hate"),
    ("always", "never"),
    ("first", "last"),
    ("enter", "exit"),
    ("question", "answer"),
    ("north", "south"),
    ("east", "west"),
    ("increase", "decrease"),
    ("maximum", "minimum"),
    ("possible", "impossible"),
    ("begin", "end"),
    ("alive", "dead"),
    ("awake", "asleep"),
    ("loud", "quiet"),
    ("smooth", "rough"),
    ("friend", "enemy"),
    ("accept", "reject"),
    ("remember", "forget"),
    ("tall", "short"),
    ("heavy", "light"),
    ("sweet", "sour"),
    ("arrive", "leave"),
    ("victory", "defeat"),
)
PLURALS: tuple[tuple[str, str], ...] = (
    ("mouse", "mice"),
    ("child", "children"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("goose", "geese"),
    ("man", "men"),
    ("woman", "women"),
    ("person", "people"),
    ("cactus", "cacti"),
    ("leaf", "leaves"),
    ("knife", "knives"),
    ("wolf", "wolves"),
    ("box", "boxes"),
    ("city", "cities"),
    ("baby", "babies"),
    ("ox", "oxen"),
    ("crisis", "crises"),
    ("bus", "buses"),
    ("potato", "potatoes"),
    ("tomato", "tomatoes"),
    ("hero", "heroes"),
    ("half", "halves"),
    ("life", "lives"),
    ("shelf", "shelves"),
    ("church", "churches"),
    ("party", "parties"),
    ("dish", "dishes"),
    ("fox", "foxes"),
    ("story", "stories"),
    ("criterion", "criteria"),
)
# (question, answer, full sentence answer)
FACTS: tuple[tuple[str, str, str], ...] = (
    ("How many days are there in a week?", "7", "There are 7 days in a week."),
    ("How many months are there in a year?", "12", "There are 12 months in a year."),
    ("How many hours are there in a day?", "24", "There are 24 hours in a day."),
    ("How many minutes are there in an hour?", "60", "There are 60 minutes in an hour."),
    ("How many legs does a spider have?", "8", "A spider has 8 legs."),
    ("How many legs does an insect have?", "6", "An insect has 6 legs."),
    ("How many sides does a triangle have?", "3", "A triangle has 3 sides."),
    ("How many sides does a hexagon have?", "6", "A hexagon has 6 sides."),
    ("How many continents are there?", "7", "There are 7 continents."),
    ("Which planet is closest to the Sun?", "Mercury", "Mercury is the planet closest to the Sun."),
    ("What is the largest planet in our solar system?", "Jupiter", "Jupiter is the largest planet."),
    ("Which planet is known as the Red Planet?", "Mars", "Mars is known as the Red Planet."),
    ("At what temperature in Celsius does water freeze?", "0", "Water freezes at 0 degrees Celsius."),
    ("At what temperature in Celsius does water boil at sea level?", "100", "Water boils at 100 degrees Celsius."),
    ("What color do you get by mixing blue and yellow?", "green", "Mixing blue and yellow gives green."),
    ("What color do you get by mixing red and white?", "pink", "Mixing red and white gives pink."),
    ("What color do you get by mixing red and yellow?", "orange", "Mixing red and yellow gives orange."),
    ("What is the largest ocean on Earth?", "Pacific", "The Pacific Ocean is the largest ocean."),
    ("What is the tallest mountain in the world?", "Everest", "Mount Everest is the tallest mountain."),
    ("What is the chemical formula of water?", "H2O", "The chemical formula of water is H2O."),
    ("What is the chemical symbol for gold?", "Au", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for iron?", "Fe", "The chemical symbol for iron is Fe."),
    ("What is a baby dog called?", "puppy", "A baby dog is called a puppy."),
    ("What is a baby cat called?", "kitten", "A baby cat is called a kitten."),
    ("What is a baby sheep called?", "lamb", "A baby sheep is called a lamb."),
    ("What is a baby horse called?", "foal", "A baby horse is called a foal."),
    ("What is a baby cow called?", "calf", "A baby cow is called a calf."),
    ("Which gas do plants absorb from the air?", "carbon dioxide", "Plants absorb carbon dioxide."),
    ("What do bees make?", "honey", "Bees make honey."),
    ("What is the square root of 81?", "9", "The square root of 81 is 9."),
    ("What is the square root of 64?", "8", "The square root of 64 is 8."),
    ("Which animal is known as the king of the jungle?", "lion", "The lion is known as the king of the jungle."),
    ("What is the fastest land animal?", "cheetah", "The cheetah is the fastest land animal."),
    ("Which organ pumps blood around the body?", "heart", "The heart pumps blood around the body."),
    ("How many players are on a soccer team on the field?", "11", "A soccer team has 11 players on the field."),
    ("What is frozen water called?", "ice", "Frozen water is called ice."),
    ("Which star is at the center of our solar system?", "Sun", "The Sun is at the center of our solar system."),
    ("How many wheels does a bicycle have?", "2", "A bicycle has 2 wheels."),
    ("What is the opposite color of black?", "white", "The opposite color of black is white."),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CAPITAL_Q = ("What is the capital of {x}?", "Name the capital city of {x}.")
OPPOSITE_Q = ('What is the opposite of "{x}"?', 'Give the antonym of the word "{x}".')
PLURAL_Q = ('What is the plural of "{x}"?', 'Write the plural form of "{x}".')
ARITHMETIC_TRAIN = 110
ARITHMETIC_HELDOUT = 24
GENERAL_HELDOUT_SHARE = 0.25


def general(rng: random.Random) -> Split:
    items: dict[str, list[tuple[str, str, str]]] = {  # kind -> [(question, output, answer)]
        "capital": [
            (rng.choice(CAPITAL_Q).replace("{x}", c), f"The capital of {c} is {cap}.", cap) for c, cap in CAPITALS
        ],
        "opposite": [
            (rng.choice(OPPOSITE_Q).replace("{x}", w), f'The opposite of "{w}" is "{o}".', o) for w, o in OPPOSITES
        ],
        "plural": [(rng.choice(PLURAL_Q).replace("{x}", w), f'The plural of "{w}" is "{p}".', p) for w, p in PLURALS],
        "fact": [(q, out, a) for q, a, out in FACTS],
        "sequence": [
            (f"What day comes after {d}?", f"The day after {d} is {DAYS[(i + 1) % 7]}.", DAYS[(i + 1) % 7])
            for i, d in enumerate(DAYS)
        ]
        + [
            (f"Which month comes after {m}?", f"The month after {m} is {MONTHS[(i + 1) % 12]}.", MONTHS[(i + 1) % 12])
            for i, m in enumerate(MONTHS)
        ],
    }
    problems: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    while len(problems) < ARITHMETIC_TRAIN + ARITHMETIC_HELDOUT:
        op = rng.choice("+-x")
        a, b = rng.randint(2, 20), rng.randint(2, 12)
        if op == "-":
            a, b = max(a, b) + b, min(a, b)
        value = a + b if op == "+" else a - b if op == "-" else a * b
        question = f"What is {a} {op} {b}?"
        if question in seen or _found(str(value), question):
            continue
        seen.add(question)
        problems.append((question, f"{a} {op} {b} = {value}.", str(value)))
    train: list[Record] = []
    heldout: list[Record] = []
    for kind, rows in items.items():
        rng.shuffle(rows)
        n_held = round(len(rows) * GENERAL_HELDOUT_SHARE)
        train += [record(kind, q, "", out, a) for q, out, a in rows[n_held:]]
        heldout += [record(kind, q, "", out, a) for q, out, a in rows[:n_held]]
    train += [record("arithmetic", q, "", out, a) for q, out, a in problems[:ARITHMETIC_TRAIN]]
    heldout += [record("arithmetic", q, "", out, a) for q, out, a in problems[ARITHMETIC_TRAIN:]]
    return train, heldout


# --------------------------------------------------------------------------------------------- writing

GENERATORS: dict[str, Callable[[random.Random], Split]] = {
    "medical": medical,
    "finance": finance,
    "general": general,
}


def build(name: str, seed: int = SEED) -> Split:
    """The (train, heldout) records of one set, each shuffled (deterministic for a given seed)."""
    rng = random.Random(f"{seed}:{name}")
    train, heldout = GENERATORS[name](rng)
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def to_jsonl(records: list[Record]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_all(out_dir: Path, seed: int = SEED) -> list[Path]:
    """Write every set's train.jsonl and heldout.jsonl under out_dir/NAME/; returns the files."""
    written = []
    for name in GENERATORS:
        train, heldout = build(name, seed)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, records in (("train", train), ("heldout", heldout)):
            path = folder / f"{split}.jsonl"
            path.write_text(to_jsonl(records), encoding="utf-8")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for path in write_all(args.out, args.seed):
        lines = path.read_text(encoding="utf-8").count("\n")
        sys.stdout.write(f"{path}: {lines} records, {path.stat().st_size} bytes\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
