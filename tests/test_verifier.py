from mixsd.answers import boxed, contains, extract, is_correct, normalize


def test_boxed_takes_the_last_balanced_box():
    assert boxed("x \\boxed{1} then \\boxed{a{b}c}") == "a{b}c"
    assert boxed("no box") is None and boxed("\\boxed{open") is None


def test_rules():
    assert extract("so 1,234 and then 56.", "last_number") == "56"
    assert normalize("1,234.0") == "1234" and normalize(" The  Bozhae Age. ") == "the bozhae age"
    assert is_correct("The answer is 12.\n\n\\boxed{12}", "12")
    assert is_correct("I think it is 12", "12") and not is_correct("I think it is 13", "12")
    assert is_correct("The answer to this question is Luzhistad.", "Luzhistad")
    assert not is_correct("The answer is Luzhistadt.", "Luzhistad")
    assert not is_correct("\\boxed{Mabruvale} but Luzhistad", "Luzhistad")  # a box decides when present
    assert contains("born in the Bozhae Age!", "the Bozhae Age")
