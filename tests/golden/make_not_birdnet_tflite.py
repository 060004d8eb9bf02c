#!/usr/bin/env python3
"""Writes `not_birdnet.tflite`: a valid float32 TFLite model with BirdNET's input shape
([1, 144000]) that only adds its input to itself, for the importer's refusal test.
Checked by running it in ai-edge-litert. Usage: python3 make_not_birdnet_tflite.py [OUT]"""

import os
import sys

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

WINDOW = 144_000


def tensor(name, buffer):
    t = schema.TensorT()
    t.name = name
    t.shape = [1, WINDOW]
    t.shapeSignature = [-1, WINDOW]
    t.type = schema.TensorType.FLOAT32
    t.buffer = buffer
    return t


def build():
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.ADD
    code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 0]
    op.outputs = [1]
    op.builtinOptionsType = schema.BuiltinOptions.AddOptions
    op.builtinOptions = schema.AddOptionsT()
    graph = schema.SubGraphT()
    graph.tensors = [tensor("INPUT", 1), tensor("OUTPUT", 2)]
    graph.inputs = [0]
    graph.outputs = [1]
    graph.operators = [op]
    graph.name = "main"
    model = schema.ModelT()
    model.version = 3
    model.operatorCodes = [code]
    model.subgraphs = [graph]
    model.description = "not BirdNET: y = x + x"
    model.buffers = [schema.BufferT() for _ in range(3)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "not_birdnet.tflite")
    data = build()
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    x = np.linspace(-1, 1, WINDOW, dtype=np.float32)[None, :]
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    assert np.allclose(it.get_tensor(it.get_output_details()[0]["index"]), 2 * x)
    with open(out, "wb") as f:
        f.write(data)
    print(f"wrote {out} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
