"""A model of your own, registered by name: ``model.name: resnet18_narrow`` in a config
(with ``supkd --plugin my_model.py``), or ``create_model("resnet18_narrow")`` in Python."""

from supkd.models import create_model, register_model


@register_model("resnet18_narrow")
def build_resnet18_narrow(name, **kwargs):
    """A ResNet-18 with 16 channels in its first stage (a quarter of the standard width)."""
    net = create_model("resnet18", **{"width": 16, **kwargs})
    net.spec = {**net.spec, "name": name}  # create_model(**net.spec) rebuilds this network
    return net
