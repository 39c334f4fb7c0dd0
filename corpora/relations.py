"""Typed, directed relations of the KGFact world, each with the wordings used to state and ask it.

A relation has one statement (for contexts), one noun phrase that names its object (for 2-hop questions),
and at least three question cores; the first core is the training question. Paraphrases combine every
core with the framing sentences below, so each relation has at least 3 x 5 - 1 = 14 paraphrase templates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    name: str
    source: str
    target: str
    statement: str  # "{s} was born in {o}."
    phrase: str  # "the birthplace of {s}": names the object, for 2-hop questions
    questions: tuple[str, ...]

    def __post_init__(self):
        if len(self.questions) < 3:
            raise ValueError(f"relation {self.name}: needs at least three question cores")


FRAMES = (
    "{q}",
    "Quick question: {q}",
    "I was wondering: {q}",
    "Please answer the following. {q}",
    "Here is something I need to know. {q}",
)


def _r(name, source, target, statement, phrase, *questions):
    return Relation(name, source, target, statement, phrase, tuple(questions))


RELATIONS: tuple[Relation, ...] = (
    _r(
        "born_in",
        "Person",
        "Location",
        "{s} was born in {o}.",
        "the birthplace of {s}",
        "Where was {s} born?",
        "What is the birthplace of {s}?",
        "In which place was {s} born?",
    ),
    _r(
        "resides_in",
        "Person",
        "Location",
        "{s} resides in {o}.",
        "the place where {s} resides",
        "Where does {s} reside?",
        "In which place does {s} live?",
        "What is the home town of {s}?",
    ),
    _r(
        "founded",
        "Person",
        "Organization",
        "{s} founded {o}.",
        "the organization founded by {s}",
        "Which organization did {s} found?",
        "What organization was founded by {s}?",
        "{s} is the founder of which organization?",
    ),
    _r(
        "employed_by",
        "Person",
        "Organization",
        "{s} is employed by {o}.",
        "the employer of {s}",
        "Which organization employs {s}?",
        "Who is the employer of {s}?",
        "For which organization does {s} work?",
    ),
    _r(
        "attended",
        "Person",
        "Event",
        "{s} attended {o}.",
        "the event that {s} attended",
        "Which event did {s} attend?",
        "What event was attended by {s}?",
        "{s} went to which event?",
    ),
    _r(
        "works_as",
        "Person",
        "Profession",
        "{s} works as a {o}.",
        "the profession of {s}",
        "What is the profession of {s}?",
        "What does {s} work as?",
        "Which job does {s} have?",
    ),
    _r(
        "enjoys",
        "Person",
        "Hobby",
        "{s} enjoys {o}.",
        "the hobby of {s}",
        "What hobby does {s} enjoy?",
        "What is the favorite pastime of {s}?",
        "Which hobby is {s} fond of?",
    ),
    _r(
        "mastered",
        "Person",
        "Skill",
        "{s} has mastered {o}.",
        "the skill mastered by {s}",
        "Which skill has {s} mastered?",
        "What skill is {s} a master of?",
        "{s} is an expert in which skill?",
    ),
    _r(
        "owns",
        "Person",
        "PhysicalObject",
        "{s} owns a {o}.",
        "the object owned by {s}",
        "What object does {s} own?",
        "Which object belongs to {s}?",
        "What does {s} keep as a possession?",
    ),
    _r(
        "designed",
        "Person",
        "Product",
        "{s} designed the {o}.",
        "the product designed by {s}",
        "Which product did {s} design?",
        "What product was designed by {s}?",
        "{s} is the designer of which product?",
    ),
    _r(
        "subscribes_to",
        "Person",
        "Service",
        "{s} subscribes to {o}.",
        "the service {s} subscribes to",
        "Which service does {s} subscribe to?",
        "What service is {s} a subscriber of?",
        "To which service has {s} subscribed?",
    ),
    _r(
        "wrote",
        "Person",
        "MediaWork",
        "{s} wrote {o}.",
        "the work written by {s}",
        "Which work did {s} write?",
        "What was written by {s}?",
        "{s} is the author of which work?",
    ),
    _r(
        "uses",
        "Person",
        "DigitalTool",
        "{s} uses {o} every day.",
        "the tool {s} uses every day",
        "Which digital tool does {s} use every day?",
        "What tool does {s} rely on daily?",
        "Every day, {s} uses which digital tool?",
    ),
    _r(
        "assigned",
        "Person",
        "Task",
        "{s} was assigned the {o}.",
        "the task assigned to {s}",
        "Which task was {s} assigned?",
        "What task was given to {s}?",
        "{s} is responsible for which task?",
    ),
    _r(
        "lived_during",
        "Person",
        "TimePeriod",
        "{s} lived during {o}.",
        "the period in which {s} lived",
        "During which period did {s} live?",
        "In what period did {s} live?",
        "When did {s} live?",
    ),
    _r(
        "headquartered_in",
        "Organization",
        "Location",
        "{s} is headquartered in {o}.",
        "the headquarters of {s}",
        "Where is {s} headquartered?",
        "In which place are the headquarters of {s}?",
        "Where is {s} based?",
    ),
    _r(
        "manufactures",
        "Organization",
        "Product",
        "{s} manufactures the {o}.",
        "the product made by {s}",
        "Which product does {s} manufacture?",
        "What product is made by {s}?",
        "{s} is the maker of which product?",
    ),
    _r(
        "provides",
        "Organization",
        "Service",
        "{s} provides {o}.",
        "the service provided by {s}",
        "Which service does {s} provide?",
        "What service is offered by {s}?",
        "{s} runs which service?",
    ),
    _r(
        "held_in",
        "Event",
        "Location",
        "{s} was held in {o}.",
        "the venue of {s}",
        "Where was {s} held?",
        "In which place did {s} take place?",
        "What was the venue of {s}?",
    ),
    _r(
        "took_place_during",
        "Event",
        "TimePeriod",
        "{s} took place during {o}.",
        "the period of {s}",
        "During which period did {s} take place?",
        "When did {s} happen?",
        "In what period was {s} held?",
    ),
    _r(
        "sponsored_by",
        "Event",
        "Organization",
        "{s} was sponsored by {o}.",
        "the sponsor of {s}",
        "Who sponsored {s}?",
        "Which organization sponsored {s}?",
        "What was the sponsor of {s}?",
    ),
    _r(
        "requires_skill",
        "Profession",
        "Skill",
        "Every {s} needs {o}.",
        "the skill every {s} needs",
        "Which skill does every {s} need?",
        "What skill is required of a {s}?",
        "A {s} must know which skill?",
    ),
    _r(
        "hobby_uses",
        "Hobby",
        "PhysicalObject",
        "{s} is done with a {o}.",
        "the object used for {s}",
        "What object is {s} done with?",
        "Which object do you need for {s}?",
        "{s} requires which object?",
    ),
    _r(
        "skill_for",
        "Skill",
        "Task",
        "{s} is essential for the {o}.",
        "the task that needs {s}",
        "For which task is {s} essential?",
        "Which task needs {s}?",
        "What task cannot be done without {s}?",
    ),
    _r(
        "object_made_in",
        "PhysicalObject",
        "Location",
        "The {s} is made in {o}.",
        "the place where the {s} is made",
        "Where is the {s} made?",
        "In which place is the {s} produced?",
        "What is the place of origin of the {s}?",
    ),
    _r(
        "built_with",
        "Product",
        "DigitalTool",
        "The {s} was built with {o}.",
        "the tool the {s} was built with",
        "Which tool was the {s} built with?",
        "What tool was used to build the {s}?",
        "The {s} was developed using which tool?",
    ),
    _r(
        "runs_on",
        "Service",
        "DigitalTool",
        "{s} runs on {o}.",
        "the tool that {s} runs on",
        "Which tool does {s} run on?",
        "What platform powers {s}?",
        "{s} is powered by which tool?",
    ),
    _r(
        "set_in",
        "MediaWork",
        "Location",
        "{s} is set in {o}.",
        "the setting of {s}",
        "Where is {s} set?",
        "In which place does {s} take place?",
        "What is the setting of {s}?",
    ),
    _r(
        "written_during",
        "MediaWork",
        "TimePeriod",
        "{s} was written during {o}.",
        "the period when {s} was written",
        "During which period was {s} written?",
        "When was {s} written?",
        "In what period was {s} composed?",
    ),
    _r(
        "developed_by",
        "DigitalTool",
        "Organization",
        "{s} was developed by {o}.",
        "the developer of {s}",
        "Which organization developed {s}?",
        "Who developed {s}?",
        "{s} is a product of which organization?",
    ),
    _r(
        "task_tool",
        "Task",
        "DigitalTool",
        "The {s} is done with {o}.",
        "the tool used for the {s}",
        "Which tool is used for the {s}?",
        "What tool does the {s} need?",
        "The {s} is carried out with which tool?",
    ),
    _r(
        "founded_during",
        "Location",
        "TimePeriod",
        "{o} saw the founding of {s}.",
        "the period when {s} was founded",
        "During which period was {s} founded?",
        "When was {s} founded?",
        "In what period did {s} come into being?",
    ),
    _r(
        "period_known_for",
        "TimePeriod",
        "Hobby",
        "During {s}, {o} was the most popular pastime.",
        "the most popular pastime of {s}",
        "What was the most popular pastime during {s}?",
        "Which hobby was most popular during {s}?",
        "During {s}, people loved which pastime?",
    ),
)


def relations_between(domains: set[str]) -> list[Relation]:
    return [r for r in RELATIONS if r.source in domains and r.target in domains]


def paraphrase_templates(relation: Relation) -> list[str]:
    """Every (core, frame) wording except the training one."""
    combos = [FRAMES[f].format(q=core) for core in relation.questions for f in range(len(FRAMES))]
    return [c for c in combos if c != relation.questions[0]]
