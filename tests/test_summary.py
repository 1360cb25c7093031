"""`darkfold info`'s layer table: Darknet's row for each layer type, and the tables of cfg/."""

import hashlib

import pytest

import darkfold
from darkfold.cfg import Cfg
from darkfold.model import Model
from darkfold.summary import layer_table

from conftest import CFG_DIR, all_cfgs
from fixtures import NET, ONE_OF_EACH_TYPE

# The row of each layer type in Darknet's layer table (name and options, input, output, BFLOPs),
# as Darknet's make_*_layer functions print it.
ROWS = {
    "convolutional": "   0 conv      4       3 x 3/ 1     32 x  32 x   3 ->   32 x  32 x   4 0.000 BF",
    "connected": "   0 connected           10         32 x  32 x   3 ->    1 x   1 x  10",
    "local": "   0 local                          32 x  32 x   3 ->   32 x  32 x   2",
    "maxpool": "   0 max                2x 2/ 2     32 x  32 x   3 ->   16 x  16 x   3 0.000 BF",
    "local_avgpool": "   0 avg                2x 2/ 2     32 x  32 x   3 ->   16 x  16 x   3 0.000 BF",
    "avgpool": "   0 avgpool                        32 x  32 x   3 ->    1 x   1 x   3",
    "route": "   2 route 1 0                                     ->   32 x  32 x   8",
    "shortcut": "   2 shortcut 0                     32 x  32 x   3 ->   32 x  32 x   3 0.000 BF",
    "scale_channels": "   2 scale_channels 0                1 x   1 x   8 ->   32 x  32 x   8",
    "sam": "   2 sam 0                          32 x  32 x   3 ->   32 x  32 x   3",
    "upsample": "   0 upsample                 2x    32 x  32 x   3 ->   64 x  64 x   3",
    "reorg": "   1 reorg                   / 2    32 x  32 x   4 ->   16 x  16 x  16",
    "reorg3d": "   0 reorg                   / 2    32 x  32 x   3 ->   16 x  16 x  12",
    "yolo": "   1 yolo                           32 x  32 x  18 ->   32 x  32 x  18",
    "Gaussian_yolo": "   1 Gaussian_yolo                  32 x  32 x  30 ->   32 x  32 x  30",
    "region": "   1 region                         32 x  32 x  12 ->   32 x  32 x  12",
    "detection": "   1 detection                       1 x   1 x 539 ->    1 x   1 x 539",
    "dropout": "   0 dropout                        32 x  32 x   3 ->   32 x  32 x   3",
    "softmax": "   0 softmax                        32 x  32 x   3 ->   32 x  32 x   3",
    "cost": "   1 cost                           32 x  32 x   3 ->   32 x  32 x   3",
    "batchnorm": "   0 batchnorm                      32 x  32 x   3 ->   32 x  32 x   3",
}

# The options that change a type's row.
VARIANTS = {
    "grouped convolution": (NET + "[convolutional]\nfilters=6\ngroups=3\nsize=3\npad=1\n",
                            "   0 conv      6/   3  3 x 3/ 1     32 x  32 x   3 ->   32 x  32 x   6 0.000 BF"),
    "convolution, unequal strides": (NET + "[convolutional]\nfilters=4\nsize=3\nstride_x=2\nstride_y=1\n",
                                     "   0 conv      4       3x 3/ 2x 1   32 x  32 x   3 ->   15 x  30 x   4 0.000 BF"),
    "dilated convolution": (NET + "[convolutional]\nfilters=4\nsize=3\npad=1\ndilation=2\n",
                            "   0 conv      4       3 x 3/ 1(2)  32 x  32 x   3 ->   32 x  32 x   4 0.000 BF"),
    "maxpool, unequal strides": (NET + "[maxpool]\nsize=2\nstride_x=2\nstride_y=1\n",
                                 "   0 max               2x 2/ 2x 1   32 x  32 x   3 ->   16 x  32 x   3 0.000 BF"),
    "local_avgpool, unequal strides": (NET + "[local_avgpool]\nsize=3\nstride_x=1\nstride_y=2\n",
                                       "   0 avg               3x 3/ 1x 2   32 x  32 x   3 ->   32 x  16 x   3 0.000 BF"),
    "downsample": (NET + "[upsample]\nstride=-2\n",
                   "   0 downsample               2x    32 x  32 x   3 ->   16 x  16 x   3"),
    "grouped route": (NET + "[convolutional]\nfilters=4\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n",
                      "   1 route 0  1/2                                  ->   32 x  32 x   2"),
}

# The first 16 hex digits of the sha256 of each cfg's layer table: any change to any row of a
# shipped cfg fails here, and prints the new table to compare with `darkfold info` of a
# known-good checkout. A new cfg in cfg/ needs its line here.
TABLES = {
    "Gaussian_yolov3_BDD.cfg": "f8651b2be8cef258",
    "csdarknet53-omega.cfg": "ceb1fe09ef104d7a",
    "darknet.cfg": "5987ce6eb781470f",
    "darknet19.cfg": "ec5f16a057623c04",
    "darknet53.cfg": "ec5b0a2939d7ec20",
    "efficientnet-lite3.cfg": "cc0126c2d9789beb",
    "efficientnet_b0.cfg": "1747bb5ce10c9bb3",
    "enet-coco.cfg": "59098779778bd692",
    "tiny-yolo-voc.cfg": "3e32b5cd60a6a115",
    "tiny-yolo.cfg": "0c77bbc4aa25700e",
    "yolo-voc.cfg": "b8d462e31c414806",
    "yolo.cfg": "0d1993e40c5d40c1",
    "yolo9000.cfg": "6d290de9d5c17e44",
    "yolov1-tiny.cfg": "1c93be42743a0ba7",
    "yolov1.cfg": "7d46b6731ae16599",
    "yolov2-tiny-voc.cfg": "3e32b5cd60a6a115",
    "yolov2-tiny.cfg": "9cdaf865afa4acf6",
    "yolov2-voc.cfg": "b8d462e31c414806",
    "yolov2.cfg": "0d1993e40c5d40c1",
    "yolov3-openimages.cfg": "3e40e8aa4eaa4557",
    "yolov3-spp.cfg": "875988c20a64f480",
    "yolov3-tiny-prn.cfg": "7c01ae9eadc5f131",
    "yolov3-tiny.cfg": "1e051f2ff22a7845",
    "yolov3-tiny_3l.cfg": "21fe80f102988616",
    "yolov3-voc.cfg": "0719bca461677df6",
    "yolov3.cfg": "2d9fa88eccde9486",
    "yolov3_5l.cfg": "18b74f6b2922bd42",
    "yolov4-csp-swish.cfg": "01e31b9c63dc0165",
    "yolov4-csp-x-mish.cfg": "328bb4a09d1f6f9a",
    "yolov4-csp.cfg": "a7c6b0ccac497c89",
    "yolov4-p5.cfg": "0c0a2c5a2cce80aa",
    "yolov4-p6.cfg": "cac30e79a67e2eaf",
    "yolov4-tiny-3l.cfg": "eb4515af8f78833c",
    "yolov4-tiny.cfg": "9a2dd1de669f3252",
    "yolov4.cfg": "99a8c115b55fc345",
    "yolov4x-mish.cfg": "29b492294b065c49",
    "yolov7-tiny.cfg": "98cac8d43bc1af77",
    "yolov7.cfg": "6d20d2882d40ae7c",
    "yolov7x.cfg": "736c2ea4bdbf1b91",
    "yolov1/tiny-yolo.cfg": "1c93be42743a0ba7",
    "yolov1/yolo.cfg": "7d46b6731ae16599",
}


def last_row(text):
    return layer_table(Model(Cfg(text))).splitlines()[-3]  # before the BFLOPs and parameter totals


@pytest.mark.parametrize("name", sorted(ONE_OF_EACH_TYPE))
def test_each_layer_type_has_darknets_row(name):
    assert last_row(ONE_OF_EACH_TYPE[name]) == ROWS[name]


@pytest.mark.parametrize("variant", VARIANTS)
def test_options_that_darknet_shows_change_the_row(variant):
    text, row = VARIANTS[variant]
    assert last_row(text) == row


@pytest.mark.parametrize("path", all_cfgs(), ids=lambda p: p.name)
def test_layer_tables_of_the_shipped_cfgs_are_unchanged(path):
    table = layer_table(darkfold.load(path))
    digest = hashlib.sha256(table.encode()).hexdigest()[:16]
    assert digest == TABLES[path.relative_to(CFG_DIR).as_posix()], f"darkfold info {path} printed:\n{table}"
