"""Wrong answers, and IPython's error reporting hijacked so that failing tests print nothing."""
THREAT = "tampering with what the tests use"
EXPECT = {"score": 0}

CODE = '''
ip = get_ipython()
ip.set_custom_exc((BaseException,), lambda shell, etype, evalue, tb, tb_offset=None: None)
ip.showtraceback = lambda *args, **kwargs: None
ip._showtraceback = lambda *args, **kwargs: None
'''


def build(sub):
    sub.wrong_answers()
    sub.add_cell(CODE, after="scaled_dot_product_attention")
