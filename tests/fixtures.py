"""Cfg texts shared by several test modules.

``NET`` is the [net] section most small test models start with (its four lines put the first
layer's header on line 5); ``SMALL_YOLO`` a complete detection model of four layers;
``ONE_OF_EACH_TYPE`` one small valid cfg per registry type, whose last layer is of that type;
``EVERY_LAYER_CFG`` one network of most layer types and options the engine runs.
"""

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"

SMALL_YOLO = NET + """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=18
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""

LOCAL = NET + "[local]\nfilters=2\nsize=3\npad=1\n"

# Keyed by layers.TYPES name: a type added to the registry without a fixture here fails
# test_layers' test that every type parses.
ONE_OF_EACH_TYPE = {
    "convolutional": NET + "[convolutional]\nfilters=4\nsize=3\npad=1\n",
    "connected": NET + "[connected]\noutput=10\n",
    "local": LOCAL,
    "maxpool": NET + "[maxpool]\nsize=2\nstride=2\n",
    "local_avgpool": NET + "[local_avgpool]\nsize=2\nstride=2\n",
    "avgpool": NET + "[avgpool]\n",
    "route": NET + "[convolutional]\nfilters=4\n[maxpool]\n[route]\nlayers=-1,0\n",
    "shortcut": NET + "[maxpool]\n[maxpool]\n[shortcut]\nfrom=-2\n",
    "scale_channels": NET + "[convolutional]\nfilters=8\n[avgpool]\n[scale_channels]\nfrom=-2\n",
    "sam": NET + "[maxpool]\n[maxpool]\n[sam]\nfrom=-2\n",
    "upsample": NET + "[upsample]\nstride=2\n",
    "reorg": NET + "[convolutional]\nfilters=4\n[reorg]\nstride=2\n",
    "reorg3d": NET + "[reorg3d]\nstride=2\n",
    "yolo": NET + "[convolutional]\nfilters=18\nsize=1\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=1\n",
    # Gaussian YOLOv3: 9 values per box besides the classes.
    "Gaussian_yolo": NET + "[convolutional]\nfilters=30\nsize=1\n[Gaussian_yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\n"
                           "num=3\nclasses=1\n",
    "region": NET + "[convolutional]\nfilters=12\nsize=1\n[region]\nanchors=1,1,2,2\nclasses=1\ncoords=4\nnum=2\n",
    # side * side * ((1 + coords) * num + classes) = 7 * 7 * (5 * 2 + 1) values
    "detection": NET + "[connected]\noutput=539\n[detection]\nside=7\ncoords=4\nnum=2\nclasses=1\n",
    "dropout": NET + "[dropout]\nprobability=0.5\n",
    "softmax": NET + "[softmax]\n",
    "cost": NET + "[softmax]\n[cost]\n",
    "batchnorm": NET + "[batchnorm]\n",
}


# Every layer type and option the engine runs that the YOLO cfgs leave out, but [reorg] and
# [reorg3d] (which the float64 reference of test_engine.py does not run), and the heads.
EVERY_LAYER_CFG = """\
[net]
width=24
height=24
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=8
groups=2
size=3
stride=1
pad=1
activation=swish

[convolutional]
batch_normalize=1
filters=8
groups=8
size=3
stride=1
pad=1
dilation=2
activation=relu6

[shortcut]
from=-3
weights_type=per_channel
weights_normalization=softmax
activation=leaky

[shortcut]
from=-1,-4
weights_type=per_feature
weights_normalization=relu
activation=linear

[maxpool]
size=2
stride=1

[local_avgpool]
size=3
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=hard_mish

[upsample]
stride=-2

[upsample]
stride=2
scale=0.5

[route]
layers=-1,-3
groups=2
group_id=1

[avgpool]

[convolutional]
filters=16
size=1
activation=logistic

[scale_channels]
from=10

[convolutional]
filters=16
size=1
stride_x=1
stride_y=1
activation=gelu

[sam]
from=-2
activation=tanh

[connected]
output=10
batch_normalize=1
activation=elu

[softmax]
groups=2

[dropout]
probability=0.5
"""
