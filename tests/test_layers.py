import pytest

import darkfold

from darkfold.cfg import Cfg, read_cfg
from darkfold.errors import CfgError
from darkfold.layers import TYPES, Param, Shape, build_layers

from conftest import CFG_DIR, all_cfgs
from fixtures import NET, ONE_OF_EACH_TYPE


def build(text, path="t.cfg"):
    return build_layers(Cfg(text, path))


@pytest.mark.parametrize("path", all_cfgs(), ids=lambda p: p.name)
def test_every_shipped_cfg_infers_shapes(path):
    net, layers, _ = build_layers(read_cfg(path))
    assert layers and all(min(layer.output) >= 1 for layer in layers)


@pytest.mark.parametrize("name, expected", [("yolov3-tiny.cfg", 5.571), ("yolov2.cfg", 29.475),
                                            ("yolov4.cfg", 128.459), ("yolov3-voc.cfg", 65.442)])
def test_total_bflops_match_what_darknet_prints(name, expected):
    # yolov3-voc is 65.443 in double precision; Darknet sums in float.
    model = darkfold.load(CFG_DIR / name)
    assert "%5.3f" % model.bflops == "%5.3f" % expected


def test_yolov3_tiny_shapes_follow_darknet():
    _, layers, _ = build_layers(read_cfg(CFG_DIR / "yolov3-tiny.cfg"))
    assert layers[0].output == Shape(416, 416, 16)
    assert layers[11].type == "maxpool" and layers[11].output == Shape(13, 13, 512)  # size 2, stride 1
    assert layers[16].type == "yolo" and layers[16].mask == (3, 4, 5)
    assert layers[20].sources == (19, 8) and layers[20].output == Shape(26, 26, 384)
    assert layers[19].output == Shape(26, 26, 128)


@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_registry_type_parses_under_each_of_its_section_names(name):
    kind = TYPES[name]
    before, _, after = ONE_OF_EACH_TYPE[name].rpartition(f"[{name}]")
    for section_name in kind.section_names:
        _, layers, warnings = build(before + f"[{section_name}]" + after)
        assert layers[-1].kind is kind and layers[-1].type == name and warnings == []


def test_the_four_detection_heads_and_nothing_else_are_heads():
    heads = {name for name, text in ONE_OF_EACH_TYPE.items() if build(text)[1][-1].is_head}
    assert heads == {"yolo", "Gaussian_yolo", "region", "detection"}


INPUTS_CFG = NET + """
[convolutional]
filters=8

[maxpool]

[route]
layers=-1,0,-2

[convolutional]
filters=8
size=1

[shortcut]
from=0, -2

[avgpool]

[scale_channels]
from=4

[sam]
from=-3

[convolutional]
filters=18
size=1

[yolo]
mask=0,1,2
anchors=1,2,3,4,5,6
num=3
classes=1
"""


def test_inputs_are_the_layer_before_then_the_layers_the_cfg_lists_as_darknet_reads_them():
    _, layers, _ = build(INPUTS_CFG)
    # Layer 0 reads the network input, which is no layer; a route reads its layers= only, a
    # layer listed twice twice; shortcut, scale_channels and sam read the layer before and from=.
    assert [layer.inputs for layer in layers] == [(), (0,), (1, 0, 0), (2,), (3, 0, 2), (4,), (5, 4), (6, 4),
                                                  (7,), (8,)]


def test_convolution_params_are_listed_in_weights_file_order():
    _, (conv,), _ = build(NET + "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\ngroups=1\n")
    assert conv.params == (Param("biases", (8,)), Param("scales", (8,)), Param("rolling_mean", (8,)),
                           Param("rolling_variance", (8,)), Param("weights", (8, 3, 3, 3)))
    assert conv.output == Shape(32, 32, 8)


def test_connected_stores_batchnorm_after_weights():
    _, (_, fc), _ = build(NET + "[maxpool]\nsize=4\nstride=4\n[connected]\noutput=10\nbatch_normalize=1\n")
    assert [p.name for p in fc.params] == ["biases", "weights", "scales", "rolling_mean", "rolling_variance"]
    assert fc.params[1].shape == (10, 8 * 8 * 3)


def test_grouped_convolution_weights_have_input_channels_per_group():
    _, (_, conv), _ = build(NET + "[convolutional]\nfilters=8\nsize=1\n[convolutional]\nfilters=8\ngroups=4\nsize=3\n")
    assert conv.params[-1].shape == (8, 2, 3, 3)
    assert conv.bflops == pytest.approx(2 * 8 * 2 * 9 * 30 * 30 / 1e9)


def test_convolution_without_activation_is_logistic_as_in_darknet():
    _, (conv,), _ = build(NET + "[convolutional]\nfilters=4\n")
    assert conv.activation == "logistic"


def test_dilation_does_not_change_darknet_output_size():
    _, (conv,), _ = build(NET + "[convolutional]\nfilters=4\nsize=3\npad=1\ndilation=2\n")
    assert conv.output == Shape(32, 32, 4) and conv.dilation == 2


def test_maxpool_with_stride_one_keeps_the_size_with_one_padding_pixel():
    _, (pool,), _ = build(NET + "[maxpool]\nsize=2\nstride=1\n")
    assert pool.output == Shape(32, 32, 3) and pool.padding == 1


@pytest.mark.parametrize("stride, expected", [(2, Shape(64, 64, 3)), (-2, Shape(16, 16, 3))])
def test_upsample_negative_stride_downsamples(stride, expected):
    _, (layer,), _ = build(NET + f"[upsample]\nstride={stride}\n")
    assert layer.output == expected


def test_reorg_moves_space_into_channels():
    _, (layer,), _ = build(NET.replace("channels=3", "channels=4") + "[reorg]\nstride=2\n")
    assert layer.output == Shape(16, 16, 16)


@pytest.mark.parametrize("kind, channels, reverse", [("reorg", 3, 0), ("reorg", 5, 0), ("reorg3d", 4, 1)])
def test_reorg_whose_channels_do_not_split_into_stride_squared_planes_is_an_error(kind, channels, reverse):
    # Found by fuzzing the forward pass: Darknet's reorg_cpu reads past the tensor (or divides
    # by zero) there, and the engine's reshape failed with a bare ValueError.
    with pytest.raises(CfgError, match=r"stride=2: Darknet's reorg cuts the channels of its \w+ into stride x stride = 4 planes, "
                                         r"and 4 does not divide \d+"):
        build(NET.replace("channels=3", f"channels={channels}") + f"[{kind}]\nstride=2\nreverse={reverse}\n")


def test_reorg3d_splits_its_output_channels():
    _, (layer,), _ = build(NET + "[reorg3d]\nstride=2\n")
    assert layer.output == Shape(16, 16, 12)


def test_reverse_reorg_needs_channels_divisible_by_stride_squared():
    with pytest.raises(CfgError, match="3 channels are not divisible by 4"):
        build(NET + "[reorg]\nstride=2\nreverse=1\n")


def test_route_groups_take_a_channel_slice():
    _, layers, _ = build(NET + "[convolutional]\nfilters=8\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n")
    assert layers[1].output == Shape(32, 32, 4)


def test_shortcut_keeps_the_shape_of_the_layer_before():
    _, layers, _ = build(NET + "[convolutional]\nfilters=8\n[convolutional]\nfilters=4\n[shortcut]\nfrom=-2\n")
    assert layers[2].output == Shape(32, 32, 4) and layers[2].sources == (0,)
    assert layers[2].bflops == pytest.approx(32 * 32 * 4 / 1e9)


def test_scale_channels_outputs_the_shape_of_its_source():
    text = NET + "[convolutional]\nfilters=8\n[avgpool]\n[convolutional]\nfilters=8\nsize=1\n[scale_channels]\nfrom=-3\n"
    _, layers, _ = build(text)
    assert layers[3].output == Shape(32, 32, 8)


def test_route_to_a_layer_that_does_not_exist_names_the_line():
    with pytest.raises(CfgError) as error:
        build(NET + "[convolutional]\nfilters=4\n[route]\nlayers=-1, 5\n")
    assert str(error.value) == ("t.cfg:8: layer 1 [route]: layers=5 refers to layer 5, which does not exist "
                                "(layers 0 to 0 come before this one)")


def test_route_of_unequal_sizes_is_an_error():
    with pytest.raises(CfgError, match="route needs equal width and height"):
        build(NET + "[convolutional]\nfilters=4\n[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n")


def test_unknown_layer_type_names_file_line_and_type():
    with pytest.raises(CfgError, match=r"t.cfg:5: layer 0: unknown layer type \[convolution\]; darkfold knows: "):
        build(NET + "[convolution]\nfilters=4\n")


def test_darknet_layer_type_darkfold_cannot_run_is_refused():
    with pytest.raises(CfgError, match=r"t.cfg:5: layer 0: layer type \[lstm\] is not supported by darkfold"):
        build(NET + "[lstm]\noutput=4\n")


def test_option_that_changes_the_computation_is_refused():
    with pytest.raises(CfgError, match=r"t.cfg:7: layer 0 \[convolutional\]: xnor=1 is not supported"):
        build(NET + "[convolutional]\nfilters=4\nxnor=1\n")


def test_unknown_activation_is_an_error_not_relu():
    with pytest.raises(CfgError, match="t.cfg:6: unknown activation 'leakyy'"):
        build(NET + "[convolutional]\nactivation=leakyy\n")


def test_unknown_key_is_a_warning_with_its_line():
    _, _, warnings = build(NET + "[convolutional]\nfilters=4\nfliters=8\n")
    assert warnings == ["t.cfg:7: unknown key 'fliters' in [convolutional] (ignored); did you mean 'filters'?"]


def test_unknown_key_far_from_any_known_key_has_no_suggestion():
    _, _, warnings = build(NET + "[maxpool]\nsize=2\ncolour=red\n")
    assert warnings == ["t.cfg:7: unknown key 'colour' in [maxpool] (ignored)"]


def test_error_carries_the_typo_that_caused_it():
    text = NET + "[convolutional]\nfiltres=18\nsize=1\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=1\n"
    with pytest.raises(CfgError, match="set filters=18") as error:
        build(text)
    assert error.value.warnings == ["t.cfg:6: unknown key 'filtres' in [convolutional] (ignored); "
                                    "did you mean 'filters'?"]


def test_typo_in_the_failing_section_is_suggested():
    with pytest.raises(CfgError, match="needs width=") as error:
        build("[net]\nwidht=32\nheight=32\nchannels=3\n[maxpool]\n")
    assert error.value.warnings == ["t.cfg:2: unknown key 'widht' in [net] (ignored); did you mean 'width'?"]


def test_inline_comment_after_a_name_warns_that_darknet_reads_it():
    _, (conv,), warnings = build(NET + "[convolutional]\nfilters=4 # four\nactivation=leaky # slope 0.1\n")
    assert conv.activation == "leaky" and conv.filters == 4
    assert warnings == ["t.cfg:7: Darknet reads activation='leaky#slope0.1', comment included; darkfold reads "
                        "'leaky'. Put the comment on a line of its own"]


def test_duplicate_key_in_a_layer_is_an_error():
    with pytest.raises(CfgError, match=r"t.cfg:7: duplicate key 'filters' in \[convolutional\] \(first set on line 6\)"):
        build(NET + "[convolutional]\nfilters=4\nfilters=8\n")


def test_duplicate_training_key_in_net_is_a_warning_first_wins():
    _, _, warnings = build(NET + "batch=1\nbatch=64\n[convolutional]\nfilters=4\n")
    assert warnings == ["t.cfg:6: duplicate key 'batch' in [net] (first set on line 5); "
                        "the first is used, as in Darknet"]


def test_yolo_head_that_does_not_match_filters_says_what_to_set():
    text = NET + "[convolutional]\nfilters=255\nsize=1\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=20\n"
    with pytest.raises(CfgError, match=r"needs 25 x 3 = 75: set filters=75"):
        build(text)


def test_yolo_mask_outside_the_anchors_is_an_error():
    text = NET + "[convolutional]\nfilters=18\nsize=1\n[yolo]\nmask=3,4,5\nanchors=1,2,3,4,5,6\nnum=3\nclasses=1\n"
    with pytest.raises(CfgError, match="mask index 3 is outside the 3 anchors"):
        build(text)


def test_first_section_must_be_net():
    with pytest.raises(CfgError, match=r"t.cfg:1: the first section is \[convolutional\]"):
        build("[convolutional]\nfilters=4\n")


def test_net_without_input_size_is_an_error():
    with pytest.raises(CfgError, match="needs width=, height= and channels="):
        build("[net]\nwidth=32\n[convolutional]\n")


def test_kernel_larger_than_input_is_an_error():
    with pytest.raises(CfgError, match="a 5x5 kernel does not fit the 4 x 4 input"):
        build("[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nsize=5\n")


def test_scale_channels_takes_exactly_one_source():
    text = NET + "[convolutional]\nfilters=8\n[avgpool]\n[scale_channels]\nfrom=-2,-1\n"
    with pytest.raises(CfgError, match=r"t.cfg:9: layer 2 \[scale_channels\]: from= takes one layer here, not 2"):
        build(text)


def test_local_kernel_larger_than_input_is_an_error():
    with pytest.raises(CfgError, match="a 5x5 kernel does not fit the 2 x 2 input"):
        build("[net]\nwidth=2\nheight=2\nchannels=1\n[local]\nsize=5\n")


def test_weighted_shortcut_needs_a_normalization_as_in_darknet():
    with pytest.raises(CfgError, match="weights_type=per_channel needs weights_normalization="):
        build(NET + "[convolutional]\nfilters=3\n[shortcut]\nfrom=-1\nweights_type=per_channel\n")


def test_huge_anchor_count_fails_without_building_a_huge_mask():
    text = NET + "[convolutional]\nfilters=18\nsize=1\n[yolo]\nnum=2000000000\nclasses=1\nmask=0,1,2\n"
    with pytest.raises(CfgError, match="anchors= has 0 values"):
        build(text)


@pytest.mark.parametrize("text, message", [
    ("[net]\nwidth=100000\nheight=416\nchannels=3\n[maxpool]\n",
     r"t.cfg:2: \[net\] width=100000: darkfold accepts inputs of at most 16384 pixels a side"),
    ("[net]\nwidth=416\nheight=416\nchannels=100000\n[maxpool]\n",
     r"t.cfg:4: \[net\] the input 416 x 416 x 100000 = 17,305,600,000 values is more than the 2,147,483,647"),
    (NET + "[convolutional]\nfilters=1000000000\nsize=3\n",
     r"t.cfg:5: layer 0 \[convolutional\]: its weights would be 1000000000 x 3 x 3 x 3 = 27,000,000,000 values"),
    (NET + "[convolutional]\nfilters=3000000\nsize=1\n",
     r"t.cfg:5: layer 0 \[convolutional\]: the output would be 32 x 32 x 3000000 = 3,072,000,000 values"),
    (NET + "[upsample]\nstride=2000000\n",
     r"t.cfg:5: layer 0 \[upsample\]: the output would be 64000000 x 64000000 x 3"),
    (NET + "[maxpool]\nsize=2000000000\n",
     r"t.cfg:6: layer 0 \[maxpool\]: size=2000000000 is larger than any input darkfold accepts \(16384 pixels\)"),
    (NET + "[connected]\noutput=100000\n[connected]\noutput=100000\n",
     r"t.cfg:7: layer 1 \[connected\]: its weights would be 100000 x 100000 = 10,000,000,000 values"),
    ("[net]\ninputs=1\n" + "[connected]\noutput=40000\n" * 3,
     r"t.cfg:7: layer 2 \[connected\]: the model would have 3,200,160,000 parameters up to here"),
], ids=["net width", "net channels", "conv weights", "conv output", "upsample output", "maxpool window",
        "connected weights", "total parameters"])
def test_absurd_sizes_fail_while_inferring_shapes(text, message):
    with pytest.raises(CfgError, match=message) as error:
        build(text)
    assert error.value.path == "t.cfg" and error.value.line is not None


def test_yolo_without_mask_and_a_huge_num_fails_on_the_anchors_at_once():
    # Without mask= Darknet masks all num anchors; building range(2e9) would take minutes and gigabytes.
    text = NET + "[convolutional]\nfilters=18\nsize=1\n[yolo]\nnum=2000000000\nclasses=1\nanchors=1,2\n"
    with pytest.raises(CfgError, match="anchors= has 2 values, expected 4000000000"):
        build(text)


def test_the_largest_shipped_cfgs_stay_well_inside_the_limits():
    # The largest input, output, parameter array and parameter count among the cfgs in cfg/.
    for name in ("yolov4-p6.cfg", "yolov7x.cfg", "yolov1.cfg"):
        _, layers, _ = build_layers(read_cfg(CFG_DIR / name))
        assert max(layer.output.w * layer.output.h * layer.output.c for layer in layers) < 2**27
        assert max(param.size for layer in layers for param in layer.params) < 2**27
        assert sum(layer.param_count for layer in layers) < 2**28


@pytest.mark.parametrize("options, message", [("groups=5", r"groups=5 does not divide the 3072 values"),
                                              ("temperature=0", "temperature=0: the softmax divides by it")])
def test_softmax_groups_must_divide_the_input_and_temperature_be_non_zero(options, message):
    # Found by fuzzing the forward pass: the engine's reshape raised a bare ValueError.
    with pytest.raises(CfgError, match=message):
        build(NET + f"[softmax]\n{options}\n")
