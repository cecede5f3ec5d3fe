"""The spec gallery (`configs/specs/`): every spec loads with its inputs and documents how to run it; its labels
and few-shot examples pass its own checks; the checks accept good and reject bad hand-written answers; and
every gallery spec builds end to end with a tiny teacher."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from data_tools.gallery_checks import TOOLS
from data_tools.inputs import load_inputs, split_inputs
from data_tools.scoring import failures, score
from data_tools.spec import PromptSpec, load_spec
from promptbake.core.config import InputError

SPECS = Path(__file__).resolve().parents[1] / "configs" / "specs"
GALLERY = ["csv_extraction", "bilingual_replies", "tool_call", "idk_context", "style_rules",
           "product_faq", "ticket_triage", "review_reply"]
# specs whose label is one field of the answer (a category, a sentiment), not a whole answer: a few-shot example's
# label is read from its output, and each input's label must be one of the allowed values
FIELD_LABELS = {
    "ticket_triage": (lambda output: json.loads(output)["category"],
                      {"billing", "shipping", "technical", "account", "returns"}),
    "review_reply": (lambda output: output[1:output.index("]")], {"positive", "negative", "mixed"}),
}


def spec_of(name: str) -> PromptSpec:
    return load_spec(SPECS / f"{name}.yaml")


def failed(spec: PromptSpec, input: str, answer: str, label: str | None = None) -> set[str]:
    return set(failures(score(spec.rules, input, answer, label)))


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_spec_loads_and_says_how_to_run_it(path):
    spec = load_spec(path)
    inputs = load_inputs(spec)
    assert len(inputs) >= 2  # the split needs one input on each side
    header = path.read_text().split("\nname:")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"promptbake data build configs/specs/{path.name}" in header
    if path.stem in GALLERY:
        assert spec.output_dir == f"runs/{path.stem}/data" and len(inputs) >= 20
        assert spec.examples and all(r.check is not None for r in spec.rules)


@pytest.mark.parametrize("name", GALLERY)
def test_labels_and_examples_pass_their_own_checks(name):
    """A reference answer that broke a rule would teach the rule wrong; so would a few-shot example (scored
    against itself as its label, for the label-comparing checks)."""
    spec = spec_of(name)
    label_of, allowed = FIELD_LABELS.get(name, (lambda output: output, None))
    for text, item in load_inputs(spec).items():
        if allowed is not None:
            assert item.label in allowed, (text, item.label)
        elif item.label is not None:
            assert not failed(spec, text, item.label, item.label), (text, item.label)
    for ex in spec.examples:
        assert not failed(spec, ex.input, ex.output, label_of(ex.output)), ex.input


def test_csv_extraction_rejects_invented_values():
    spec = spec_of("csv_extraction")
    text = "Delta Plus needs a copy of the receipt for ORD-29932. Our line is 800-555-8784."
    label = ",800-555-8784,ORD-29932"
    assert not failed(spec, text, label, label)
    assert not failed(spec, text, " ,800-555-8784 ,ord-29932", label) - {"csv_line"}  # case and spacing aside
    # seed 000: a name where the message gives none
    assert failed(spec, text, "Kevin Smith,800-555-8784,ORD-29932", label) == {"name_from_message",
                                                                               "fields_match_label"}
    # grounding checks that a value was given, not that it sits in the right field: a company in the name field
    # passes it; the content check against the label catches it, naming the field
    results = score(spec.rules, text, "Delta Plus,800-555-8784,ORD-29932", label)
    assert failures(results).keys() == {"fields_match_label"}
    assert results["fields_match_label"].reason == "name 'delta plus' (label '')"
    assert failed(spec, text, ",800-555-8785,ORD-29932", label) == {"phone_from_message", "fields_match_label"}
    assert failed(spec, text, ",800-555-8784,ORD-29933", label) == {"order_from_message", "fields_match_label"}
    assert failed(spec, text, "Unknown,800-555-8784,ORD-29932", label) == {
        "name_from_message", "empty_means_empty", "fields_match_label"}
    assert failed(spec, text, "name,phone,order_id\n,800-555-8784,ORD-29932", label) >= {"csv_line",
                                                                                        "fields_match_label"}
    # a value left out, or one answer for every message: grounded, well formed, and wrong
    assert failed(spec, text, ",,ORD-29932", label) == {"fields_match_label"}
    assert failed(spec, text, ",,", label) == {"fields_match_label"}
    assert "no label" in score(spec.rules, text, label)["fields_match_label"].reason
    named = "Grace O'Neil here. Refund for ORD-77102 still pending."
    assert not failed(spec, named, "Grace O'Neil,,ORD-77102", "Grace O'Neil,,ORD-77102")
    assert failed(spec, named, '"Grace O\'Neil",,ORD-77102', "Grace O'Neil,,ORD-77102") == {"csv_line",
                                                                                            "fields_match_label"}


def test_bilingual_replies_need_both_languages():
    spec = spec_of("bilingual_replies")
    text = "Do you offer gift wrapping?"
    good = ("EN: Yes, we offer gift wrapping for a small fee at checkout.\n\n"
            "ES: Sí, ofrecemos envoltorio de regalo por un pequeño coste al pagar.")
    assert not failed(spec, text, good)
    assert failed(spec, text, "EN: Yes, we offer gift wrapping at checkout.") == {"spanish_second", "spanish_words"}
    copied = "EN: Yes, we offer gift wrapping.\n\nES: Yes, we offer gift wrapping."
    assert failed(spec, text, copied) == {"spanish_words", "on_topic"}
    # a few Spanish words sprinkled over a copy fool the word list, not the content check
    assert failed(spec, text, "EN: Yes, we offer gift wrapping.\n\nES: Sí, we offer gift wrapping para usted.") == {
        "on_topic"}
    assert failed(spec, text, good.replace("Yes,", "Yes [name],")) == {"no_placeholders"}
    assert failed(spec, text, good + "\n\nFR: Oui.") == {"spanish_second"}
    assert failed(spec, text, good[4:]) == {"english_first"}


def test_bilingual_replies_answer_the_message():
    """on_topic (content_checks.py): the reply shares a content word with the message; a stock reply does not."""
    spec = spec_of("bilingual_replies")
    good = {
        "I was charged twice for the same order.":
            "EN: I'm sorry you were charged twice. We have refunded the second payment; it will reach your account "
            "in 3 to 5 days.\n\nES: Lamentamos el cargo doble. Hemos devuelto el segundo pago; llegará a su cuenta "
            "en 3 a 5 días.",
        "Do you deliver on Saturdays?":
            "EN: Yes, we deliver on Saturdays in most areas. Choose Saturday delivery at checkout.\n\n"
            "ES: Sí, entregamos los sábados en la mayoría de las zonas. Elija la entrega en sábado al pagar.",
        "The headphones only play sound on the left side.":
            "EN: Sorry about that. Please send the headphones back with our free return label and we will replace "
            "them.\n\nES: Lo sentimos. Envíe los auriculares con nuestra etiqueta de devolución gratuita y los "
            "cambiaremos.",
        "The tablet case does not fit the model it says it fits.":  # names shared by EN and ES are no copy
            "EN: Sorry the case does not fit. The listing says it fits the Galaxy Tab S9; we will send the right "
            "case for your tablet today.\n\nES: Lamentamos que la funda no encaje. El anuncio dice que sirve para el "
            "Galaxy Tab S9; hoy le enviaremos la funda correcta para su tablet.",
    }
    stock = ("EN: Thank you for your message. We will look into it and get back to you soon.\n\n"
             "ES: Gracias por su mensaje. Lo revisaremos y le responderemos pronto.")
    for text, answer in good.items():
        assert not failed(spec, text, answer), text
        assert failed(spec, text, stock) == {"on_topic"}, text
    charger = spec.examples[0].output  # the charger example, given to a question about Saturdays
    assert failed(spec, "Do you deliver on Saturdays?", charger) == {"on_topic"}


def test_tool_call_checks():
    spec = spec_of("tool_call")
    text = "Where is my order ORD-48213?"
    label = '<tool_call>{"name": "get_order_status", "arguments": {"order_id": "ORD-48213"}}</tool_call>'
    assert not failed(spec, text, label, label)
    assert not failed(spec, text, '<tool_call>{"arguments": {"order_id": "ord-48213 "}, "name": "get_order_status"}'
                                  '</tool_call>', label) - {"order_id_copied"}  # key order and case don't matter
    bad = {
        '<tool_call>{"name": "get_order_status", "arguments": {"order_id": "ORD-48213"}</tool_call>':
            "does not hold JSON",
        'Sure! <tool_call>{"name": "get_order_status", "arguments": {"order_id": "ORD-48213"}}</tool_call>':
            "envelope",
        '<tool_call>{"name": "track_parcel", "arguments": {"order_id": "ORD-48213"}}</tool_call>': "unknown tool",
        '<tool_call>{"name": "get_order_status", "arguments": {}}</tool_call>': "takes ['order_id']",
        '<tool_call>{"name": "get_order_status", "arguments": {"order_id": 48213}}</tool_call>': "wrong argument type",
    }
    for answer, why in bad.items():
        results = score(spec.rules, text, answer, label)
        assert not results["valid_call"].passed and why in results["valid_call"].reason, answer
        assert not results["right_call"].passed
    assert failed(spec, text, label.replace("48213", "48214"), label) == {"order_id_copied", "right_call"}
    weather = '<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon"}}</tool_call>'
    assert failed(spec, text, weather, label) == {"right_call"}
    timer = '<tool_call>{"name": "set_timer", "arguments": {"minutes": true}}</tool_call>'
    assert "wrong argument type" in score(spec.rules, text, timer, label)["valid_call"].reason


def test_tool_schema_matches_the_system_prompt():
    prompt = spec_of("tool_call").system_prompt
    offered = dict(re.findall(r"^- (\w+)\(([^)]*)\)", prompt, flags=re.MULTILINE))
    assert set(offered) == set(TOOLS)
    for name, args in TOOLS.items():
        assert re.findall(r"(\w+):", offered[name]) == list(args), name
    for line in (SPECS / "inputs" / "tool_call.jsonl").read_text().splitlines():  # every label calls a tool
        assert json.loads(line)["label"].startswith('<tool_call>{"name": "')


def test_idk_context_says_i_dont_know_only_where_the_label_does():
    spec = spec_of("idk_context")
    inputs = load_inputs(spec)
    unanswerable = [(t, i.label) for t, i in inputs.items() if i.label == "I don't know."]
    answerable = [(t, i.label) for t, i in inputs.items() if i.label != "I don't know."]
    # "I don't know." for every input must not pass most checks: about a quarter of the questions need it
    assert len(unanswerable) >= 24 and len(unanswerable) <= 0.25 * len(inputs) < len(answerable)
    for text, label in unanswerable:
        assert not failed(spec, text, "I don't know.", label)
        assert not failed(spec, text, "i don't know", label)  # normalised: case and end punctuation
        assert failed(spec, text, "I don't know, sorry.", label) == {"matches_reference"}
    for text, label in answerable:
        assert not failed(spec, text, label.upper() + ".", label)
        assert failed(spec, text, "I don't know.", label) == {"matches_reference"}
    text = next(t for t, label in answerable if label == "1889")
    assert failed(spec, text, "1887", "1889") == {"matches_reference", "numbers_from_context"}


def test_style_rules_each_violation_fails_its_own_rule():
    spec = spec_of("style_rules")
    text = "How do I hang a heavy mirror?"
    good = "use two wall anchors rated for the weight and hang the mirror on both. anything else i can help with?"
    assert not failed(spec, text, good)
    assert failed(spec, text, good.replace("use", "Use")) == {"lowercase"}
    assert failed(spec, text, good.replace("weight and", "weight, and")) == {"no_comma"}
    assert failed(spec, text, good.replace("use two", "really use two")) == {"no_intensifiers"}
    assert failed(spec, text, good.replace(" anything else i can help with?", "")) == {"closing_question"}
    assert failed(spec, text, "hang it on anchors " * 10 + "anything else i can help with?") == {"under_40_words"}
    # on_topic (content_checks.py): the answer names what was asked about, the closing question does not count
    assert failed(spec, text, "anything else i can help with?") == {"on_topic"}
    assert failed(spec, text, spec.examples[1].output) == {"on_topic"}  # the bathroom-paint answer
    good = {
        "How do I stop my kitchen tap from dripping?":
            "turn off the water under the sink and replace the worn washer in the tap. anything else i can help with?",
        "How can I tell if a wall is load bearing?":
            "check whether joists rest on it from above. if you are unsure ask a structural engineer before you cut "
            "into the wall. anything else i can help with?",
        "How do I unclog a shower drain without chemicals?":
            "pull the hair out with a drain snake and then flush it with boiling water. anything else i can help with?",
    }
    for question, answer in good.items():
        assert not failed(spec, question, answer), question
        assert failed(spec, question, spec.examples[0].output) == {"on_topic"}, question  # the squeaky-door answer


def test_product_faq_counts_repeated_questions_and_checks_its_house_rules(caplog):
    spec = spec_of("product_faq")  # its python check, faq_checks.py, sits beside the spec: no PYTHONPATH needed
    with caplog.at_level("WARNING", logger="data_tools.inputs"):
        inputs = load_inputs(spec)
    lines = (SPECS / "inputs" / "kelvin_faq.txt").read_text().splitlines()
    assert 124 <= len(inputs) == len(set(lines)) < len(lines)
    assert f"{len(lines) - len(inputs)} of {len(lines)} inputs repeat an earlier one" in caplog.text
    text = "How do I reset my Kelvin One to factory settings?"
    good = ("Hold the dial down for 10 seconds until the screen goes dark, then set it up again in the app. "
            "Step-by-step help is at help.hearthly.com/reset. Need anything else? Reply here.")
    assert not failed(spec, text, good)
    assert failed(spec, text, good.replace("help.hearthly.com/reset", "www.kelvinone.com/support")) == {
        "help_links_only"}
    assert failed(spec, text, good.replace("help.hearthly.com/reset", "https://hearthly.com/reset")) == {
        "help_links_only"}
    assert not failed(spec, text, good.replace("help.hearthly.com/reset", "https://help.hearthly.com/reset"))
    assert failed(spec, text, good.replace("Step-by-step", "Contact support if it fails. Step-by-step")) == {
        "no_handoff"}
    assert failed(spec, text, "- Hold the dial down.\n- Set it up again. Need anything else? Reply here.") == {
        "plain_text"}
    assert failed(spec, text, good.replace(" Need anything else? Reply here.", "")) == {"sign_off"}
    assert failed(spec, text, "Hold the dial. " * 25 + "Need anything else? Reply here.") == {"short"}


def test_product_faq_answers_with_the_fact_that_fits():
    """on_topic (faq_checks.uses_a_fitting_fact): a question about a fact of the prompt gets that fact, any other
    question an answer sharing its words; the sign-off alone, another question's answer or the whole fact sheet
    fail."""
    spec = spec_of("product_faq")
    sign_off = "Need anything else? Reply here."
    good = {
        "Does it work with a 5 GHz wifi network?":
            "No. The Kelvin One connects to 2.4 GHz wifi only. Most routers broadcast both bands, so pick the "
            "2.4 GHz one during setup.",
        "Is there a monthly fee?": "No. There is no subscription or monthly fee; every feature in the app is included.",
        "Does the thermostat need a neutral wire?":
            "No neutral wire is needed. The Kelvin One runs on a C-wire, or on the included power adapter if you "
            "have none.",
        "How do I switch between Celsius and Fahrenheit?":
            "Open the Hearthly app, go to Settings and choose Celsius or Fahrenheit under Units. The display changes "
            "at once.",
        "Can I lock the thermostat so my kids can't change it?":
            "Yes. Turn on Child lock in the app under Settings; the dial then does nothing until you unlock it.",
        "Where can I find the installation video?": "Watch it at help.hearthly.com/install, with the wiring steps.",
    }
    sheet = ("It needs a C-wire or the included power adapter and 2.4 GHz wifi, works with Alexa, Google Home and "
             "Apple Home, has no subscription and a 2 year warranty; hold the dial down for 10 seconds to reset.")
    for text, answer in good.items():
        assert not failed(spec, text, f"{answer} {sign_off}"), text
        assert failed(spec, text, sign_off) == {"on_topic"}, text
        assert failed(spec, text, f"{sheet} {sign_off}") == {"on_topic"}, text
    logout = spec.examples[1].output  # the app-logout answer, given to a wifi question
    assert failed(spec, "Does it work with a 5 GHz wifi network?", logout) == {"on_topic"}
    assert failed(spec, "Is there a monthly fee?", f"The warranty is 2 years. {sign_off}") == {"on_topic"}
    assert "recites facts" in score(spec.rules, "Is there a monthly fee?", f"{sheet} {sign_off}")["on_topic"].reason


def test_ticket_triage_checks_each_field_and_the_label():
    spec = spec_of("ticket_triage")
    text = "I was charged twice for order #58213. Please fix this."
    good = ('{"category": "billing", "urgent": true, '
            '"summary": "Charged twice for order 58213; wants one charge removed."}')
    assert not failed(spec, text, good, "billing")
    assert not failed(spec, text, f"```json\n{good}\n```", "billing")  # a fence is tolerated
    assert failed(spec, text, good, "returns") == {"right_category"}
    assert failed(spec, text, good.replace('"billing"', '"Billing"'), "billing") == {"category_enum", "right_category"}
    assert failed(spec, text, good.replace('"billing"', '"payments"'), "billing") == {
        "category_enum", "right_category"}
    assert failed(spec, text, good.replace("true", '"yes"'), "billing") == {"fields"}
    assert failed(spec, text, good.replace('"urgent"', '"priority"'), "billing") == {"fields"}
    assert failed(spec, text, good[:-1] + ', "order": "58213"}', "billing") == {"fields"}
    long = good.replace("wants one charge removed", "the customer would like us to remove one of the two charges soon")
    assert failed(spec, text, long, "billing") == {"short_summary"}
    everything = {r.id for r in spec.rules}
    assert failed(spec, text, "Here is the triage: " + good, "billing") == everything
    assert failed(spec, text, "[" + good + "]", "billing") == everything - {"json_only"}
    assert "summary has 18 words" in score(spec.rules, text, long, "billing")["short_summary"].reason


def test_demo_style_answers_the_question():
    """The demo's on_topic ({kind: on_topic}: the answer's meaning is close to the question's): its examples pass
    every rule; "quick answer: yes." and another task's example fail only on_topic; an answer that names its task
    by what belongs to it passes, where the word-overlap check it replaced failed it."""
    spec = load_spec(SPECS / "demo_style.yaml")
    for ex in spec.examples:
        assert not failed(spec, ex.input, ex.output), ex.input
    good = {
        "How do I cook rice?":
            "quick answer: rinse a cup of rice and simmer it in two cups of water for 15 minutes. let it rest covered.",
        "List the steps to fix a flat bike tire?":
            "quick answer: take the wheel off and find the hole in the tube. patch it and pump the tire back up.",
        "What are three tips to study for an exam?": "quick answer: study a little every day.",
    }
    for text, answer in good.items():
        assert not failed(spec, text, answer), text
        assert failed(spec, text, "quick answer: yes.") == {"on_topic"}, text
    sleep = spec.examples[0].output
    for text in ("How do I keep a houseplant alive?", "List the steps to fix a flat bike tire?", "How do I cook rice?"):
        assert failed(spec, text, sleep) == {"on_topic"}, text
    # no word in common with "wash a wool sweater", and on topic all the same
    assert not failed(spec, "How do I wash a wool sweater?", "quick answer: use warm water and a gentle detergent.")
    assert failed(spec, "How do I fix bad posture?", "quick answer: fix it slowly.") == {"on_topic"}
    assert not failed(spec, "How do I fix bad posture?", "quick answer: sit tall and check your posture often.")
    assert failed(spec, "How do I cook rice?", "quick answer:") >= {"on_topic"}  # the prefix alone says nothing


# One fixed answer for every input: the few-shot examples' outputs, a stock reply, the sign-off or closing line
# alone, each triage category. On these specs the content checks (on_topic, right_category) make every such
# answer fail at least two thirds of the held-out split, which holds 30 inputs or more.
FIXED_ANSWERS = {
    "bilingual_replies": ["EN: Thank you for your message. We will look into it and get back to you soon.\n\n"
                          "ES: Gracias por su mensaje. Lo revisaremos y le responderemos pronto."],
    "product_faq": ["Need anything else? Reply here.",
                    "It needs a C-wire or the included power adapter and 2.4 GHz wifi, works with Alexa, Google Home "
                    "and Apple Home, has no subscription and a 2 year warranty; hold the dial down for 10 seconds to "
                    "reset. Need anything else? Reply here."],
    "style_rules": ["anything else i can help with?"],
    "demo_style": ["quick answer: yes."],
    "ticket_triage": [json.dumps({"category": c, "urgent": False, "summary": "The customer needs help."})
                      for c in FIELD_LABELS["ticket_triage"][1]],
}


@pytest.mark.parametrize("name", sorted(FIXED_ANSWERS))
def test_a_fixed_answer_fails_most_held_out_inputs(name):
    spec = spec_of(name)
    inputs = load_inputs(spec, quiet=True)
    _, held_out = split_inputs(list(inputs), spec.split.eval_fraction, spec.split.seed)
    assert len(held_out) >= 30
    for answer in [ex.output for ex in spec.examples] + FIXED_ANSWERS[name]:
        passed = sum(not failed(spec, text, answer, inputs[text].label) for text in held_out)
        assert passed <= len(held_out) / 3, (answer, f"{passed}/{len(held_out)}")


def test_review_reply_tag_follows_the_label():
    spec = spec_of("review_reply")
    text = "Love the design but the bank sync fails every few days and I have to reconnect."
    good = ("[mixed] Thank you for the kind words about the design! Sorry about the sync trouble; please open "
            "Settings > Help so we can look at your bank connection. — The Acme team")
    assert not failed(spec, text, good, "mixed")
    assert failed(spec, text, good, "negative") == {"sentiment_tag"}
    assert failed(spec, text, good.replace("[mixed]", "[Mixed]"), "mixed") == {"sentiment_tag"}
    assert failed(spec, text, good.replace("[mixed] ", ""), "mixed") == {"sentiment_tag"}
    assert failed(spec, text, good.replace("Thank you", "Thank you [name]"), "mixed") == {"no_placeholders"}
    assert failed(spec, text, good.replace("so we can", "for a refund, and so we can"), "mixed") == {"no_refunds"}
    assert failed(spec, text, good.replace("— The Acme team", "- The Acme team"), "mixed") == {"sign_off"}
    assert failed(spec, text, good.replace("Thank you", "Thank you so " + "very " * 20), "mixed") == {"max_40_words"}
    # about_the_review: the reply names something the reviewer wrote; a stock thank-you does not
    stock = "[mixed] Thank you for your review! We're glad you enjoy the app. — The Acme team"
    assert failed(spec, text, stock, "mixed") == {"about_the_review"}
    assert failed(spec, "Not bad!", "[positive] Thanks for the kind words! — The Acme team", "positive") == {
        "about_the_review"}
    assert not failed(spec, "Not bad!", "[positive] Not bad is high praise, thank you! — The Acme team", "positive")


# The labelled specs: one fixed answer for every input (each few-shot example's output, and the most frequent
# label where a label is a whole answer) is right for at most a third of the held-out split, of 30 inputs or more.
LABELLED = ["csv_extraction", "idk_context", "tool_call", "review_reply"]


@pytest.mark.parametrize("name", LABELLED)
def test_a_fixed_answer_is_wrong_for_most_labelled_held_out_inputs(name):
    spec = spec_of(name)
    inputs = load_inputs(spec, quiet=True)
    _, held_out = split_inputs(list(inputs), spec.split.eval_fraction, spec.split.seed)
    assert len(held_out) >= 30
    answers = [ex.output for ex in spec.examples]
    if name not in FIELD_LABELS:
        answers.append(Counter(item.label for item in inputs.values()).most_common(1)[0][0])
    for answer in answers:
        passed = sum(not failed(spec, text, answer, inputs[text].label) for text in held_out)
        assert passed <= len(held_out) / 3, (answer, f"{passed}/{len(held_out)}")


@pytest.mark.parametrize("name", GALLERY)
def test_gallery_spec_builds_end_to_end(name, tiny_model_dir, tmp_path):
    """A random tiny teacher: its rows may all be rejected, but the build must run through the spec's inputs,
    checks and repairs, and account for every input it trained on."""
    from data_tools.build import main as build

    out = tmp_path / "data"
    spec = load_spec(SPECS / f"{name}.yaml", [f"teacher.model={tiny_model_dir}", "inputs.limit=6",
                                               "teacher.sampling.max_new_tokens=8", f"output_dir={out}"])
    try:
        manifest = build(spec)
    except InputError as e:
        assert "no teacher sample passed" in str(e)
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
        assert rejects and all(s["failed"] for r in rejects for s in r["samples"])
        rule_ids = {r.id for r in spec.rules}
        assert all(set(s["failed"]) <= rule_ids for r in rejects for s in r["samples"])
        return
    counts = manifest["counts"]
    assert counts["inputs"] == 6 and counts["sft_rows"] + counts["rejects"] == counts["train_inputs"]
    assert (out / "sft_train.jsonl").is_file() and (out / "eval_inputs.jsonl").is_file()


def test_the_demo_dev_split_asks_nothing_the_demo_spec_asks():
    """`configs/evals/demo_dev_inputs.jsonl` decides demo defaults (scripts/dev_eval.py): none of its questions may
    be a training, validation or held-out input of the demo spec, nor a near duplicate of one (the build's leakage
    threshold), and its tasks are not the spec's tasks."""
    from data_tools.build import drop_leaks

    spec = load_spec(SPECS / "demo_style.yaml")
    asked = list(load_inputs(spec, quiet=True))
    dev_file = SPECS.parent / "evals" / "demo_dev_inputs.jsonl"
    dev = [json.loads(line)["prompt"][-1]["content"] for line in dev_file.read_text().splitlines()]
    assert len(dev) == len(set(dev)) == 60
    assert not set(dev) & set(asked)
    assert drop_leaks(dev, asked, [])[2] == 0
    tasks = spec.inputs.slots["task"]
    assert not [q for q in dev if any(q.rstrip("?").endswith(" " + t) for t in tasks)]
