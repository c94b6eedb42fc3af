from market_operator.process import main

main()
