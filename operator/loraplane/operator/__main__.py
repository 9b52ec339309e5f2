from loraplane.operator.main import main

main()
