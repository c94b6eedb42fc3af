from privgrid.roles.market_operator.process import main

main()
