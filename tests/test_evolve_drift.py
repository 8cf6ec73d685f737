"""Stage 2 (evolve): the task-kept and information-gain elimination checks on planted rewrites.

The parents are the shipped specs' own task templates, rendered as the seeds stage renders
them (English and Chinese). Each parent gets hand-written rewrites of two kinds: faithful
Evol-Instruct rewrites (a constraint, a concrete detail, a reasoning step added) and planted
drift, as a 135M model writes it: persona or sales text that no longer asks for the task, a
schema task that lost its keys or its JSON, surface edits with nothing new, answers instead of
instructions. The checks must find the drift with precision and recall of at least 0.95.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dialinsight_engine.metrics import embeddings
from dialinsight_engine.operators.elimination import (
    Rewrite,
    goal_share,
    judge,
    names_key,
    required_keys,
)
from dialinsight_engine.spec import load_spec
from dialinsight_engine.spec.generation import EliminationSpec
from dialinsight_engine.stages.evolve import reinsert_placeholder, split_placeholder
from dialinsight_engine.stages.seeds import compile_templates, template_vars

SPECS = Path(__file__).resolve().parents[1] / "specs"
ALIASES = {"number_of_beds": ["bedrooms", "beds"], "number_of_baths": ["bathrooms", "baths"],
           "party_size": ["people", "guests"], "酒店类型": ["类型"]}

FAITHFUL, DRIFT = False, True
# (spec, task, template index) -> [(rewrite without {dialogue}, planted drift?)]
PLANTED: dict[tuple[str, str, int], list[tuple[str, bool]]] = {
    ("sgd-homes", "extract_requirements", 0): [
        ("Read this conversation (customer, agent). Step by step, find each requirement the customer stated, "
         "then extract them as JSON with the keys area, number_of_beds, number_of_baths, pets_allowed, "
         "furnished. Numbers as digits.", FAITHFUL),
        ("Read this conversation (customer, agent). Extract the customer's requirements as JSON with the keys "
         "area, number_of_beds, number_of_baths, pets_allowed, furnished, and use the city name for area, "
         "not a street. Only include values the customer stated. Numbers as digits.", FAITHFUL),
        ("Read this conversation between the customer and the letting agent. Extract the customer's requirements "
         "as JSON with the keys area, number_of_beds, number_of_baths, pets_allowed, furnished. If the customer "
         "changes their mind, keep the last value they gave. Numbers as digits.", FAITHFUL),
        ("Extract, as JSON, the area, number_of_beds, number_of_baths, pets_allowed and furnished values the "
         "customer asked for; ignore properties the agent merely proposed and write numbers as digits.", FAITHFUL),
        ("The customer, a recent adventurer, has requested a luxurious abode to impress the discerning clientele.",
         DRIFT),
        ("Read this conversation (customer, agent). Describe the customer's dream home in a warm, friendly "
         "paragraph that would make them excited to move.", DRIFT),
        ("Read this conversation (customer, agent). Extract the customer's requirements as JSON with the keys "
         "area and pets_allowed. Only include values the customer stated.", DRIFT),
        ("read this conversation (customer, agent): extract the customer's requirements as JSON with the keys "
         "area, number_of_beds, number_of_baths, pets_allowed, furnished. Only include values the customer "
         "stated; numbers as digits.", DRIFT),
        ('Read this conversation. {"area": "San Jose", "number_of_beds": "2", "number_of_baths": "1", '
         '"pets_allowed": "True", "furnished": "unknown"}', DRIFT),
    ],
    ("sgd-homes", "extract_requirements", 1): [
        ("We are a rental agency. Agents must capture the customer's area, bedrooms, bathrooms, pets and "
         "furnishing needs. Return the customer's requirements (area, number_of_beds, number_of_baths, "
         "pets_allowed, furnished) as JSON, and leave a key empty when the customer did not say it.", FAITHFUL),
        ("We are a rental agency. Return the customer's requirements (area, number_of_beds, number_of_baths, "
         "pets_allowed, furnished) as JSON, checking each value against the customer's own words before you "
         "write it. Numbers as digits.", FAITHFUL),
        ("Return as JSON the requirements this customer gave our rental agency: area (a city), number_of_beds, "
         "number_of_baths, pets_allowed and furnished, with the beds and baths as digits.", FAITHFUL),
        ("I'm your new agent at the rental agency and I'm here to help you find the home of your dreams. Tell me "
         "everything you love about a house, from the garden to the kitchen, and I will find the perfect place "
         "for you and your family, with a view that will take your breath away every single morning.", DRIFT),
        ("We are a rental agency. Agents must capture the customer's area, bedrooms, bathrooms, pets and "
         "furnishing needs. Write a friendly welcome message for new customers of the agency.", DRIFT),
        ("We are a rental agency. Propose three matching properties to the customer and book a viewing for the "
         "one they like best.", DRIFT),
        ("We are a rental agency. Agents must capture the customer's area, bedrooms, bathrooms, pets and "
         "furnishing needs, propose matching properties and book viewings. Conversation: Return the customer's "
         "requirements (area, number_of_beds, number_of_baths, pets_allowed, furnished) as JSON. Only include "
         "values the customer stated. Numbers as digits!", DRIFT),
    ],
    ("sgd-homes", "summarise_needs", 0): [
        ("Summarise the latest property news for our newsletter readers.", DRIFT),
        ("Summarise in two sentences what the customer needs, including their budget and move-in date, for a "
         "colleague who takes over the case.", FAITHFUL),
        ("In two sentences, summarise what the customer needs and point out the one requirement they said is "
         "not negotiable, for a colleague who takes over the case.", FAITHFUL),
        ("Write a two-sentence summary of what the customer needs, naming the area and the number of bedrooms, "
         "so that a colleague can take over the case without rereading the chat.", FAITHFUL),
        ("The customer, a recent adventurer, has requested a luxurious abode to impress the discerning clientele.",
         DRIFT),
        ("I'm your new agent and I'm here to find your dream home. Tell me about the neighbourhood you love and "
         "the view you want to wake up to.", DRIFT),
        ("Summarise, in two sentences, what the customer needs for a colleague who takes over the case.", DRIFT),
        ("Write a poem about a cosy apartment by the sea with a small garden and a cat.", DRIFT),
    ],
    ("sgd-homes", "summarise_needs", 1): [
        ("You work at a rental agency. Read the chat and write a short summary of the customer's needs, "
         "listing their must-haves before their nice-to-haves.", FAITHFUL),
        ("You work at a rental agency. Read the chat and write a short summary of the customer's needs in at "
         "most forty words, including any pets they mentioned.", FAITHFUL),
        ("You work at a rental agency. Write a short summary of the customer's needs, and say which of them "
         "the proposed properties do not meet yet.", FAITHFUL),
        ("You are a luxury real estate influencer. Write an exciting social media post about the most "
         "beautiful villa you have ever visited.", DRIFT),
        ("You work at a rental agency (the customer describes the home they want and the agent proposes "
         "properties). Greet the customer and ask them how their day was.", DRIFT),
        ("You work at a rental agency (the customer describes the home they want and the agent proposes "
         "properties), read the chat and write a short summary of the customers needs.", DRIFT),
    ],
    ("sgd-homes", "next_reply", 0): [
        ("You are the agent. Write the agent's next message: polite, short, answer the customer's last question "
         "first, then move them towards a viewing.", FAITHFUL),
        ("You are the agent. We are a rental agency. Write the agent's next message: polite, short, mention "
         "one matching property by name and move the customer towards a viewing.", FAITHFUL),
        ("You are the agent at a rental agency. Write the agent's next message in under fifty words: confirm "
         "the customer's budget, then offer two viewing times.", FAITHFUL),
        ("You are the agent. Write the agent's next message: polite and short; if the customer has pets, "
         "first say whether the property allows them, then propose a viewing.", FAITHFUL),
        ("I'm your new agent and I'm here to help you find the home of your dreams, with a garden, a pool, a "
         "view of the mountains and neighbours who will become your best friends. Let's make your dream come "
         "true together!", DRIFT),
        ("The customer is a famous chef who loves open kitchens and sunny terraces in the hills.", DRIFT),
        ("You are the agent. We are a rental agency. Agents must capture the customer's area, bedrooms, "
         "bathrooms, pets and furnishing needs, propose matching properties and book viewings. Write the "
         "agent's next message - polite, short, and move the customer towards a viewing.", DRIFT),
    ],
    ("sgd-homes", "detect_visit", 0): [
        ("Did the customer book a visit in this conversation? Answer yes or no.", DRIFT),
        ("Did the customer book a visit in this conversation? Answer as JSON with visit_booked (true or false) "
         "and property_name (or null); a visit the customer only asked about is not booked.", FAITHFUL),
        ("Did the customer book a visit to a property in this conversation, and did the agent confirm the date? "
         "Answer as JSON with visit_booked (true or false) and property_name (or null).", FAITHFUL),
        ("Decide whether a viewing was confirmed by the agent. Answer as JSON with visit_booked (true or false) "
         "and property_name (or null), using the property's full name.", FAITHFUL),
        ("Did the customer book a visit in this conversation? Explain in detail why people enjoy visiting new "
         "homes on weekends.", DRIFT),
        ("Write a story about a family visiting their future home for the first time.", DRIFT),
        ('Did the customer book a visit? {"visit_booked": true, "property_name": "Acacia Gardens"}', DRIFT),
    ],
    ("restaurants", "extract_booking", 0): [
        ("Read this conversation (customer, agent). Extract the customer's restaurant booking as JSON with the "
         "keys city, cuisine, party_size and time; use the cuisine word the customer used, party size as digits.",
         FAITHFUL),
        ("Read this conversation (customer, agent). Extract the customer's restaurant booking as JSON with the "
         "keys city, cuisine, party_size and time, writing the time as 24-hour HH:MM. Party size as digits.",
         FAITHFUL),
        ("Read this conversation. Extract the customer's final restaurant booking as JSON with the keys city, "
         "cuisine, party_size and time; when the customer changes the time, keep the last one.", FAITHFUL),
        ("Read this conversation (customer, agent). Extract the customer's restaurant booking as JSON with the "
         "keys city and cuisine. Only include values the customer stated.", DRIFT),
        ("Recommend the best Italian restaurants in San Francisco for a romantic dinner for two.", DRIFT),
        ("You are a food critic. Write a review of the most memorable meal of your life.", DRIFT),
        ("read this conversation (customer, agent). extract the customer's restaurant booking as JSON with the "
         "keys city, cuisine, party_size and time. Only include values the customer stated; leave the others "
         "empty. Party size as digits.", DRIFT),
    ],
    ("restaurants", "summarise_request", 0): [
        ("Summarise in one sentence what the customer wants, naming the restaurant if one was chosen, for a "
         "colleague who takes over.", FAITHFUL),
        ("Summarise in one sentence what the customer wants, including the party size and the time, for a "
         "colleague who takes over.", FAITHFUL),
        ("Summarise in one sentence what the customer wants, and add whether they still need a table "
         "confirmed, for a colleague who takes over.", FAITHFUL),
        ("Tonight is a night to remember: candles, soft music and the finest wine in town await our guests.",
         DRIFT),
        ("Summarise in one sentence what the customer wants for a colleague, who takes over.", DRIFT),
        ("Plan a three-course menu for a vegetarian birthday party with ten guests.", DRIFT),
    ],
    ("crosswoz-hotel", "extract_hotel", 0): [
        ("阅读下面这段对话（customer、agent）。请一步一步找出客户提出的每个条件，再把客户对酒店的要求提取为JSON，"
         "键为：价格、酒店类型、评分、设施。", FAITHFUL),
        ("阅读下面这段对话（customer、agent）。请把客户对酒店的要求提取为JSON，键为：价格、酒店类型、评分、设施。"
         "价格写成数字区间，例如400-500。只填写客户明确提出的要求。", FAITHFUL),
        ("阅读这段对话，请把客户最终确定的酒店要求提取为JSON，键为：价格、酒店类型、评分、设施。如果客户改变了主意，"
         "以最后一次说的为准。", FAITHFUL),
        ("请把客户对酒店的要求提取为JSON，键为：价格、酒店类型、评分、设施；评分只写数字，设施只列出客户点名要求的"
         "设施，不要列出客服推荐的设施。", FAITHFUL),
        ("客户是一位热爱旅行的摄影师，他梦想住进一家能看到雪山日出的豪华酒店。", DRIFT),
        ("阅读下面这段对话（customer、agent）。请把客户对酒店的要求提取为JSON，键为：价格、评分。", DRIFT),
        ("请为客户写一段热情的欢迎词，介绍我们酒店的温泉和美食。", DRIFT),
        ('阅读下面这段对话。{"价格": "400-500", "酒店类型": "舒适型", "评分": "4.5", "设施": ["wifi"]}', DRIFT),
        ("阅读下面这段对话（customer、agent），请把客户对酒店的要求提取为JSON，键为：价格、酒店类型、评分、设施。"
         "只填写客户明确提出的要求，没有提到的键留空。设施只列出客户要求的设施名称。", DRIFT),
    ],
    ("crosswoz-hotel", "extract_hotel", 1): [
        ("以JSON格式返回客户的酒店需求（价格、酒店类型、评分、设施），酒店类型只能是经济型、舒适型、高档型或豪华型"
         "之一。", FAITHFUL),
        ("我们是一家旅行预订平台。以JSON格式返回客户的酒店需求（价格、酒店类型、评分、设施），价格按每晚计算，"
         "只填写客户明确提出的要求。", FAITHFUL),
        ("以JSON格式返回客户的酒店需求（价格、酒店类型、评分、设施）。评分写成数字，例如4.5；客户没有提到的键留空，"
         "不要猜测。", FAITHFUL),
        ("我们是一家旅行预订平台。请向客户推荐三家适合家庭出游的海景酒店，并说明理由。", DRIFT),
        ("以JSON格式返回客户的酒店需求（价格、设施）。只填写客户明确提出的要求。", DRIFT),
    ],
    ("crosswoz-hotel", "summarise_trip", 0): [
        ("请先找出客户提到的所有要求，再用一句话总结客户想要什么，方便同事接手。", FAITHFUL),
        ("客户想住在市中心的豪华酒店，预算充足，喜欢安静的房间。", DRIFT),
        ("请用一句话总结客户想要什么，包括预算和入住日期，方便同事接手。", FAITHFUL),
        ("请用一句话总结客户想要什么，并指出客户最看重的一个条件，方便同事接手。", FAITHFUL),
        ("请用一句话总结客户想要什么，不超过三十个字，方便同事接手。", FAITHFUL),
        ("北京的秋天很美，香山的红叶和故宫的夕阳让每一位游客流连忘返。", DRIFT),
        ("请用一句话总结客户想要什么。方便同事接手。", DRIFT),
        ("你是一名导游，请为游客写一篇长城一日游的攻略。", DRIFT),
    ],
}


def _parents() -> dict[tuple[str, str, int], tuple[str, tuple[str, ...], str]]:
    """(spec, task, template) -> (rendered instruction, required keys, task description)."""
    out = {}
    for name in {key[0] for key in PLANTED}:
        spec = load_spec(SPECS / f"{name}.toml")
        templates = compile_templates(spec)
        roles = [r.name for r in spec.roles]
        for task in spec.tasks:
            scene = task.scenes[0] if task.scenes else spec.scenes[0].name
            for i, template in enumerate(templates[task.name]):
                text = template.render(**template_vars(spec, task, scene, roles)).strip()
                out[(name, task.name, i)] = (text, required_keys(task.output_schema), task.description)
    return out


def _rewrites(similarity: bool) -> list[tuple[Rewrite, bool]]:
    parents = _parents()
    cases = []
    for key, children in PLANTED.items():
        parent, keys, goal = parents[key]
        _, first = split_placeholder(parent)
        for text, drift in children:
            child = reinsert_placeholder(text, first)
            cases.append((Rewrite(parent, child, required_keys=keys, goal=goal), drift))
    if similarity:
        from dialinsight_engine.stages.evolve import embedding_similarities

        sims, _why = embedding_similarities([(r.parent, r.child) for r, _ in cases])
        cases = [(Rewrite(r.parent, r.child, r.required_keys, r.goal, similarity=s), d)
                 for (r, d), s in zip(cases, sims, strict=True)]
    return cases


def _precision_recall(cases: list[tuple[Rewrite, bool]], rules: EliminationSpec) -> tuple[float, float, list[str]]:
    tp = fp = fn = 0
    misses = []
    for rewrite, drift in cases:
        reasons = judge(rewrite, rules)
        tp += bool(reasons) and drift
        fp += bool(reasons) and not drift
        fn += not reasons and drift
        if bool(reasons) != drift:
            misses.append(f"{'missed' if drift else 'wrongly eliminated'}: {rewrite.child[:90]!r} {reasons}")
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), misses


def test_the_planted_set_is_balanced_and_bilingual() -> None:
    cases = _rewrites(similarity=False)
    drifts = sum(d for _, d in cases)
    assert drifts >= 40 and len(cases) - drifts >= 35
    assert sum(1 for r, _ in cases if "客户" in r.child) >= 15


@pytest.mark.parametrize("method", ["keywords", "embeddings"])
def test_planted_drift_is_eliminated_with_precision_and_recall_of_95(method: str) -> None:
    if method == "embeddings" and embeddings.available() is not None:
        pytest.skip(f"embeddings unavailable: {embeddings.available()}")
    cases = _rewrites(similarity=method == "embeddings")
    precision, recall, misses = _precision_recall(cases, EliminationSpec(key_aliases=ALIASES))
    assert precision >= 0.95 and recall >= 0.95, "\n".join([f"P={precision:.2f} R={recall:.2f}", *misses])


def test_without_the_new_checks_most_drift_survives() -> None:
    """The surface rules alone (the checks before the task-kept one) miss the planted drift."""
    rules = EliminationSpec(task_kept=False, information_gain=False)
    _, recall, _ = _precision_recall(_rewrites(similarity=False), rules)
    assert recall < 0.3


def test_task_kept_names_keys_by_alias_and_words_and_reports_each_lost_key() -> None:
    assert names_key("give the number of beds", "number_of_beds", {})
    assert names_key("how many bedrooms", "number_of_beds", ALIASES)
    assert not names_key("how many bedrooms", "number_of_beds", {})
    parent = "Extract area, number_of_beds and number_of_baths as JSON.\n{dialogue}"
    child = "Extract the area and the customer's favourite colour as JSON.\n{dialogue}"
    reasons = judge(Rewrite(parent, child, required_keys=("area", "number_of_beds", "number_of_baths")),
                    EliminationSpec())
    assert reasons == ["task_lost:key number_of_beds", "task_lost:key number_of_baths"]
    no_json = "Extract area, number_of_beds, number_of_baths and the monthly budget in a table.\n{dialogue}"
    assert judge(Rewrite(parent, no_json, required_keys=("area",)), EliminationSpec()) == ["task_lost:format json"]


def test_free_text_goal_similarity_and_switches() -> None:
    parent = "Summarise in two sentences what the customer needs.\n{dialogue}"
    drift = "Write a poem about the sea and the wind.\n{dialogue}"
    goal = "summarise what the customer needs in two sentences"
    assert goal_share(Rewrite(parent, drift, goal=goal)) == 0.0
    assert judge(Rewrite(parent, drift, goal=goal), EliminationSpec()) == ["task_lost:goal words 0.00<0.6"]
    # with embeddings, a rewrite must also be close in meaning (goal words alone can be kept by drift)
    assert judge(Rewrite(parent, drift, goal=goal, similarity=0.2), EliminationSpec()) == [
        "task_lost:similarity 0.20<0.6", "task_lost:goal words 0.00<0.6"]
    kept_words = "Summarise in two sentences what the customer needs and greet them warmly.\n{dialogue}"
    assert judge(Rewrite(parent, kept_words, goal=goal, similarity=0.7), EliminationSpec()) == []
    assert judge(Rewrite(parent, kept_words, goal=goal, similarity=0.5), EliminationSpec()) == [
        "task_lost:similarity 0.50<0.6"]
    assert judge(Rewrite(parent, drift, goal=goal), EliminationSpec(task_kept=False)) == []
    surface = "Summarise, in two sentences, what the customer needs!\n{dialogue}"
    assert judge(Rewrite(parent, surface, goal=goal), EliminationSpec()) == ["no_information_gain:0<2"]
    assert judge(Rewrite(parent, surface, goal=goal), EliminationSpec(information_gain=False)) == []
